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
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickle that is not plain tensors
        raise CheckpointError(f"checkpoint file {str(f)!r} is not readable ({type(e).__name__})") from None


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    f = Path(path) / STATE
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except ValueError:
        raise CheckpointError(f"checkpoint file {str(f)!r} is not valid JSON") from None
