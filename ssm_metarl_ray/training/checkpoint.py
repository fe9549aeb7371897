"""Resumable training checkpoints: what ``--resume`` continues from.

:func:`save_training_checkpoint` writes the learner (weights, optimizer, version), the RNG states, the
counters, the history and the buffer through :mod:`ssm_metarl_ray.utils.checkpoint` (plain tensors and
JSON, never pickle); :func:`restore_training_state` puts them back into a :class:`TrainState`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import torch

from ssm_metarl_ray.training.meta_train import TrainState
from ssm_metarl_ray.utils.checkpoint import LEARNER, CheckpointError, load_state, load_tensors, save_checkpoint


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
