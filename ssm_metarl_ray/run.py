"""What ``ssm-metarl train`` and ``evaluate`` do: meta-train, checkpoint, evaluate, write outputs.

Outputs in ``output_dir``: ``checkpoint/`` (config + weights + learner state + buffer), ``metrics.json``
(training history and held-out evaluation), ``adaptation.png`` (return vs adaptation steps), and from
training, one row / step per meta-iteration: ``progress.csv`` and TensorBoard ``events.out.tfevents.*``
(:mod:`ssm_metarl_ray.training.tracking`).

Training is :func:`~ssm_metarl_ray.training.experiment.run_experiment` on the backend a
``RuntimeConfig`` asks for (``runtime.make_backend``), with :class:`TrainOutputs` as its callback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import make_env, task_splits
from ssm_metarl_ray.training.checkpoint import save_training_checkpoint
from ssm_metarl_ray.training.evaluate import evaluate_modes, format_table
from ssm_metarl_ray.training.experiment import run_experiment
from ssm_metarl_ray.training.meta_train import TrainState
from ssm_metarl_ray.training.outputs import health_line, write_outputs
from ssm_metarl_ray.training.protocols import Backend, Callback, Sampler
from ssm_metarl_ray.training.tracking import PROGRESS, RunTracker
from ssm_metarl_ray.utils.checkpoint import BUFFER, CheckpointError, load_buffer


def _progress(state: TrainState, m: dict) -> None:
    n = state.cfg.iterations
    print(f"[iter {m['iteration']:>4}/{n}] pre-adapt return {m['meta/pre_return']:9.2f} | post-adapt "
          f"{m['meta/post_return']:9.2f} | kl {m['meta/kl']:.4f} | {health_line(m)} | steps {m['env_steps']:>9} | "
          f"sample {m['time/sample_s']:.1f}s update {m['time/update_s']:.1f}s", file=sys.stderr, flush=True)


class TrainOutputs(Callback):
    """``ssm-metarl train`` around the loop: progress lines, ``progress.csv`` / TensorBoard rows,
    a checkpoint every ``checkpoint_every`` iterations and at the end, then the held-out evaluation."""

    def __init__(self, out: Path, modes: list[str], verbose: bool, checkpoint_every: int, resumed: bool):
        self.out, self.modes, self.verbose, self.every, self.resumed = out, modes, verbose, checkpoint_every, resumed
        self.tracker: RunTracker | None = None
        self.t0 = time.perf_counter()
        self.train_s = 0.0
        self.results: dict[str, dict] = {}

    def on_start(self, state: TrainState, backend: Backend) -> None:
        cfg = state.cfg
        if self.verbose:
            print(f"meta-training {cfg.model.kind} on {cfg.env}: {cfg.iterations} iterations x "
                  f"{cfg.meta.meta_batch_size} tasks x {cfg.meta.episodes_per_task} episodes "
                  f"({len(state.train_tasks)} train / {len(state.test_tasks)} held-out tasks)"
                  + (f", resuming after iteration {state.iteration}" if self.resumed else ""), file=sys.stderr)
            where = backend.describe()
            if where:
                print(where, file=sys.stderr)
        self.tracker = RunTracker(self.out, state.history)  # writes nothing before the first iteration

    def on_iteration(self, state: TrainState, metrics: dict, backend: Backend) -> None:
        assert self.tracker is not None  # on_start ran
        self.tracker.write(state.iteration, metrics)
        if self.verbose:
            _progress(state, metrics)
        if self.every and state.iteration % self.every == 0 and state.iteration < state.cfg.iterations:
            save_training_checkpoint(self.out / "checkpoint", state, backend.buffer)

    def on_end(self, state: TrainState, backend: Backend) -> None:
        self.train_s = time.perf_counter() - self.t0
        save_training_checkpoint(self.out / "checkpoint", state, backend.buffer)
        if self.verbose:
            print(f"evaluating adaptation on {len(state.test_tasks)} held-out tasks ({', '.join(self.modes)})...",
                  file=sys.stderr)
        self.results = backend.evaluate(state, self.modes, progress=self.verbose, final=True)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()


def run_training(cfg: ExperimentConfig, out: Path, modes: list[str], verbose: bool = True,
                 sampler: Sampler | None = None, runtime=None, resume: Path | None = None,
                 backend: Backend | None = None) -> dict:
    """Meta-train, checkpoint, evaluate, write outputs; returns ``{mode: summary}``.

    ``runtime`` (a ``runtime.config.RuntimeConfig``) with ``num_workers != 0`` runs sampling, the buffer,
    evaluation (and with ``learner_gpus`` the learner) on Ray; None or ``num_workers=0`` keeps everything
    in this process (``sampler``: sample with this one, in this process). ``backend``: use this one instead.
    ``resume``: a checkpoint directory written by this function to continue from.
    """
    if backend is None:
        from ssm_metarl_ray.runtime import make_backend  # imports Ray only for a RayBackend

        backend = make_backend(runtime, out, sampler)
    outputs = TrainOutputs(out, modes, verbose, runtime.checkpoint_every if runtime is not None else 0,
                           resumed=resume is not None)
    try:
        state = run_experiment(cfg, backend, [outputs], resume=resume)
    finally:
        outputs.close()
    eval_s = time.perf_counter() - outputs.t0 - outputs.train_s
    extra: dict[str, Any] = {"env_steps": state.env_steps, "train_seconds": outputs.train_s,
                             "eval_seconds": eval_s, **backend.report()}
    write_outputs(out, cfg, outputs.results, state.history, extra)
    _report(cfg, outputs.results, out, tracked=outputs.tracker is not None and outputs.tracker.opened)
    return outputs.results


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
