"""Pieces of a training run: held-out evaluation in this process, resumable checkpoints, outputs.

``metrics.json`` + ``adaptation.png`` (:func:`write_outputs`), the checkpoint ``--resume`` continues from
(:func:`save_training_checkpoint` / :func:`restore_training_state`) and the health line of the progress
output. The run itself is :func:`ssm_metarl_ray.training.experiment.run_experiment`; what ``ssm-metarl
train`` / ``evaluate`` do around it is :mod:`ssm_metarl_ray.run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.training.evaluate import Evaluator, plot_results, summarize
from ssm_metarl_ray.training.meta_train import TrainState
from ssm_metarl_ray.utils.checkpoint import (
    LEARNER,
    CheckpointError,
    load_state,
    load_tensors,
    save_checkpoint,
)
from ssm_metarl_ray.utils.progress import Progress


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
