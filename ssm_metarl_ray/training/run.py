"""What ``ssm-metarl train`` and ``evaluate`` do: meta-train, checkpoint, evaluate, write outputs.

Outputs in ``output_dir``: ``checkpoint/`` (config + weights + learner state + buffer), ``metrics.json``
(training history and held-out evaluation), ``adaptation.png`` (return vs adaptation steps), and from
training, one row / step per meta-iteration: ``progress.csv`` and TensorBoard ``events.out.tfevents.*``
(:mod:`ssm_metarl_ray.training.tracking`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import make_env, task_splits
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.training.evaluate import Evaluator, format_table, plot_results, summarize
from ssm_metarl_ray.training.meta_train import LocalSampler, TrainState, add_to_buffer, build_state, meta_train
from ssm_metarl_ray.training.tracking import PROGRESS, RunTracker
from ssm_metarl_ray.utils.checkpoint import (
    BUFFER,
    LEARNER,
    CheckpointError,
    load_buffer,
    load_state,
    load_tensors,
    save_checkpoint,
)
from ssm_metarl_ray.utils.progress import Progress


def _progress(state: TrainState, m: dict) -> None:
    n = state.cfg.iterations
    print(f"[iter {m['iteration']:>4}/{n}] pre-adapt return {m['meta/pre_return']:9.2f} | post-adapt "
          f"{m['meta/post_return']:9.2f} | kl {m['meta/kl']:.4f} | {health_line(m)} | steps {m['env_steps']:>9} | "
          f"sample {m['time/sample_s']:.1f}s update {m['time/update_s']:.1f}s", file=sys.stderr, flush=True)


def health_line(m: dict) -> str:
    """Learning-health summary of one iteration's metrics: does the inner step move the policy?

    ``step`` is the RMS change of the mean action from one inner step in units of the action std,
    ``inner-kl`` KL(adapted || meta), ``|g|`` the meta-gradient norm by group, ``clip`` the fraction of
    clipped meta-updates (TRPO: rejected steps).
    """
    if "health/action_change" not in m:
        return "no inner step"
    groups = " ".join(f"{g} {m[f'grad/{g}']:.2g}" for g in ("core", "actor", "log_std") if f"grad/{g}" in m)
    return (f"step {m['health/action_change']:.3f}std inner-kl {m['health/kl']:.3g} | |g| {groups} | "
            f"clip {100 * m.get('health/clipped_frac', 0.0):.0f}%")


def evaluate_modes(cfg: ExperimentConfig, weights: dict, test_tasks, buffer: ExperienceBuffer | None,
                   modes: list[str], version: int = 0, progress: bool = False) -> dict[str, dict]:
    """``{mode: summarize(per-task returns)}`` in this process; ``progress``: a bar / ETA lines on stderr."""
    evaluator = Evaluator(cfg, seed=cfg.seed + 1)
    evaluator.set_weights({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in weights.items()},
                          version)
    with Progress(len(modes) * len(test_tasks), "held-out evaluation (tasks x modes)", enabled=progress) as bar:
        return {mode: summarize(evaluator.evaluate(test_tasks, mode, buffer, on_task=bar.update))
                for mode in modes}


def write_outputs(out: Path, cfg: ExperimentConfig, results: dict, history: list[dict], extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": cfg.to_dict(), "evaluation": results, "history": history, **extra}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(out / "metrics.json")
    plot_results(results, out / "adaptation.png",
                 f"{cfg.env} / {cfg.model.kind}: held-out return vs adaptation steps ({cfg.num_test_tasks} tasks)",
                 env=cfg.env)  # MAML 2017's published curve as a reference where the family has one


def learner_tensors(state: TrainState) -> dict[str, torch.Tensor]:
    """The learner's weights as tensors (copied: arrays from a learner actor arrive read-only)."""
    return {k: torch.tensor(v) for k, v in state.learner.get_weights().items()}


def save_training_checkpoint(path: Path, state: TrainState, buffer) -> Path:
    """Everything ``--resume`` needs: learner + optimizer + version, RNG states, counters, history, buffer."""
    weights = learner_tensors(state)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())  # MT19937's tuple
    rng = {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
           "numpy_pos": int(np_state[2])}
    return save_checkpoint(path, state.cfg, weights, {**state.learner.state_dict(), "rng": rng}, buffer,
                           {"iteration": state.iteration, "env_steps": state.env_steps,
                            "episode_counter": state.episode_counter, "history": state.history})


def restore_training_state(state: TrainState, ckpt: Path) -> None:
    """Inverse of :func:`save_training_checkpoint` (the buffer is restored by whoever holds it)."""
    learner_state = load_tensors(ckpt, LEARNER)
    rng = learner_state.pop("rng", None)
    try:
        state.learner.load_state_dict(learner_state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:  # tensors that do not fit the config
        raise CheckpointError(f"checkpoint {str(ckpt)!r}: {LEARNER} does not match its config "
                              f"({' '.join(str(e).split())[:200]})") from None
    meta = load_state(ckpt)
    state.iteration, state.env_steps = int(meta.get("iteration", 0)), int(meta.get("env_steps", 0))
    state.episode_counter, state.history = int(meta.get("episode_counter", 0)), list(meta.get("history", []))
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        # numpy's stub wants the whole 5-tuple; numpy accepts the first three alone (no cached gaussian)
        np.random.set_state(("MT19937", rng["numpy_key"].numpy().astype(np.uint32), rng["numpy_pos"]))  # type: ignore[arg-type]


def run_training(cfg: ExperimentConfig, out: Path, modes: list[str], verbose: bool = True,
                 sampler=None, runtime=None, resume: Path | None = None) -> dict:
    """Meta-train, checkpoint, evaluate, write outputs.

    ``runtime`` (a ``runtime.config.RuntimeConfig``) with ``num_workers != 0`` runs sampling, the buffer,
    evaluation (and with ``learner_gpus`` the learner) on Ray; None or ``num_workers=0`` keeps everything
    in this process. ``resume``: a checkpoint directory written by this function to continue from.
    """
    t0 = time.perf_counter()
    state = build_state(cfg)
    if resume is not None:
        restore_training_state(state, resume)
        if (resume / BUFFER).is_file() and (runtime is None or not runtime.use_ray):
            state.buffer = load_buffer(resume)
    if verbose:
        print(f"meta-training {cfg.model.kind} on {cfg.env}: {cfg.iterations} iterations x "
              f"{cfg.meta.meta_batch_size} tasks x {cfg.meta.episodes_per_task} episodes "
              f"({len(state.train_tasks)} train / {len(state.test_tasks)} held-out tasks)"
              + (f", resuming after iteration {state.iteration}" if resume is not None else ""),
              file=sys.stderr)
    session, tracker = None, RunTracker(out, state.history)  # writes nothing before the first iteration
    if sampler is None and runtime is not None and runtime.use_ray:
        from ssm_metarl_ray.runtime.session import RaySession

        initial = resume / BUFFER if resume is not None and (resume / BUFFER).is_file() else None
        session = RaySession(cfg, runtime, state.spec, out, initial_buffer=initial)
    try:
        if session is not None:
            state.learner = session.learner(state.learner)
            if verbose:
                print(session.describe(), file=sys.stderr)
        buffer = session.buffer if session is not None else state.buffer
        every = runtime.checkpoint_every if runtime is not None else 0

        def on_iteration(st: TrainState, m: dict) -> None:
            tracker.write(st.iteration, m)
            if verbose:
                _progress(st, m)
            if every and st.iteration % every == 0 and st.iteration < cfg.iterations:
                save_training_checkpoint(out / "checkpoint", st, buffer)

        meta_train(state, sampler or (session.sampler if session else LocalSampler(cfg, seed=cfg.seed)),
                   on_iteration, session.add_experience if session is not None else add_to_buffer)
        train_s = time.perf_counter() - t0
        weights = learner_tensors(state)
        version = state.learner.version
        save_training_checkpoint(out / "checkpoint", state, buffer)
        if verbose:
            print(f"evaluating adaptation on {len(state.test_tasks)} held-out tasks ({', '.join(modes)})...",
                  file=sys.stderr)
        if session is not None:
            results = session.evaluate({k: v.numpy() for k, v in weights.items()}, version, state.test_tasks,
                                       modes, progress=verbose)
        else:
            results = evaluate_modes(cfg, weights, state.test_tasks, state.buffer, modes, version,
                                     progress=verbose)
    finally:
        tracker.close()
        if session is not None:
            session.close()
    eval_s = time.perf_counter() - t0 - train_s
    extra: dict[str, Any] = {"env_steps": state.env_steps, "train_seconds": train_s, "eval_seconds": eval_s}
    if session is not None:  # restarts of the buffer actor, rows restored / stored / lost
        extra["buffer"] = session.buffer_report()
    write_outputs(out, cfg, results, state.history, extra)
    _report(cfg, results, out, tracked=tracker.opened)
    return results


def run_evaluation(cfg: ExperimentConfig, weights: dict, ckpt: Path, out: Path, modes: list[str]) -> dict:
    env = make_env(cfg.env)
    _, test_tasks = task_splits(env, cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)
    buffer = load_buffer(ckpt)
    if buffer is None and "hybrid" in modes:
        raise CheckpointError(f"checkpoint {str(ckpt)!r} has no {BUFFER}: hybrid evaluation needs it")
    try:
        results = evaluate_modes(cfg, weights, test_tasks, buffer, modes, progress=True)
    except RuntimeError as e:  # weights that do not fit the configured model
        raise CheckpointError(f"checkpoint {str(ckpt)!r} does not match its config: {str(e).splitlines()[0]}") from None
    write_outputs(out, cfg, results, [], {"checkpoint": str(ckpt)})
    _report(cfg, results, out)
    return results


def _report(cfg: ExperimentConfig, results: dict, out: Path, tracked: bool = False) -> None:
    print(f"\nHeld-out return ({cfg.env}, {cfg.model.kind}, {cfg.num_test_tasks} tasks, mean ± s.e.m.) "
          f"by adaptation step:")
    print(format_table(results))
    for mode, r in results.items():
        gain = r["mean"][-1] - r["mean"][0]
        what = (f"episode {len(r['mean'])} of a trial vs episode 1" if mode == "in-context"
                else f"after {len(r['mean']) - 1} adaptation steps")
        print(f"{mode}: {what}, the return changes by {gain:+.2f}")
    print(f"wrote {out / 'checkpoint'}, {out / 'metrics.json'}, {out / 'adaptation.png'}"
          + (f", {out / PROGRESS} and TensorBoard events (tensorboard --logdir {out})" if tracked else ""))
