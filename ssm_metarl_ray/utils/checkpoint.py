"""Checkpoints as a directory of safe files: JSON config/metrics, tensor-only torch files, npz buffer.

Loading uses ``torch.load(weights_only=True)`` and ``np.load(allow_pickle=False)``: a checkpoint can
never execute code. Writes go to a temporary sibling directory renamed into place, so an interrupted
save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ssm_metarl_ray.config import ExperimentConfig

CONFIG, WEIGHTS, LEARNER, BUFFER, STATE = "config.json", "weights.pt", "learner.pt", "buffer.npz", "state.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, unreadable or inconsistent."""


def save_checkpoint(path: str | os.PathLike, config: ExperimentConfig, weights: dict[str, torch.Tensor],
                    learner_state: dict | None = None, buffer=None, state: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2))
        torch.save({k: v.detach().cpu() for k, v in weights.items()}, tmp / WEIGHTS)
        if learner_state is not None:
            torch.save(learner_state, tmp / LEARNER)
        if buffer is not None:
            buffer.save(tmp / BUFFER)
        if state is not None:
            (tmp / STATE).write_text(json.dumps(state, indent=2))
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not readable: no {CONFIG} in it")
    try:
        return ExperimentConfig.from_dict(json.loads((path / CONFIG).read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has a bad {CONFIG}: {e}") from None


def load_tensors(path: str | os.PathLike, name: str = WEIGHTS) -> dict:
    f = Path(path) / name
    if not f.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not readable: no {name} in it")
    try:
        with warnings.catch_warnings():  # torch warns before raising on some corrupt files: one line only
            warnings.simplefilter("ignore")
            out = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickle that is not plain tensors
        raise CheckpointError(f"checkpoint file {str(f)!r} is not readable ({type(e).__name__})") from None
    if not isinstance(out, dict):
        raise CheckpointError(f"checkpoint file {str(f)!r} holds a {type(out).__name__}, not a dict of tensors")
    return out


STATE_COUNTERS = ("iteration", "env_steps", "episode_counter")


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """``state.json`` (counters and history of a training run; ``{}`` when absent), its types checked."""
    f = Path(path) / STATE
    try:
        state = json.loads(f.read_text()) if f.is_file() else {}
    except (ValueError, OSError):
        raise CheckpointError(f"checkpoint file {str(f)!r} is not valid JSON") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {str(f)!r} must hold a JSON object, got {type(state).__name__}")
    for k in STATE_COUNTERS:
        v = state.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"checkpoint file {str(f)!r}: {k} must be an integer >= 0, got {v!r}")
    if not isinstance(state.get("history", []), list):
        raise CheckpointError(f"checkpoint file {str(f)!r}: history must be a list")
    return state


def load_buffer(path: str | os.PathLike):
    """The checkpoint's ExperienceBuffer, or None when it has none; a truncated or corrupt ``buffer.npz``
    raises ``CheckpointError`` (never unpickles: ``ExperienceBuffer.load``)."""
    from ssm_metarl_ray.replay.buffer import ExperienceBuffer

    f = Path(path) / BUFFER
    if not f.is_file():
        return None
    try:
        return ExperienceBuffer.load(f)
    except ValueError as e:
        raise CheckpointError(f"checkpoint buffer {str(f)!r} is not readable: {e}") from None
