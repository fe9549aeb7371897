"""The interfaces a training run is written against, each with a local and a Ray implementation.

=========  ========================================  =============================================
protocol   in this process                            on Ray (``ssm_metarl_ray.runtime``)
=========  ========================================  =============================================
Sampler    ``training.meta_train.LocalSampler``       ``runtime.workers.RaySampler``
Learner    ``algorithms.maml.MetaLearner`` (and PPO)  ``runtime.learner.RemoteLearner``
Buffer     ``replay.buffer.ExperienceBuffer``         ``runtime.buffer.BufferClient``
Backend    ``training.experiment.LocalBackend``       ``runtime.backend.RayBackend``
=========  ========================================  =============================================

A backend owns the sampler and buffer of one run (and the learner when it moves it elsewhere) and
releases them in ``close()``; :func:`ssm_metarl_ray.training.experiment.run_experiment` drives it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.types import TaskBatch

if TYPE_CHECKING:
    from ssm_metarl_ray.training.meta_train import TrainState


class Sampler(Protocol):
    """Collects every task's MetaMAML data with the weights last set."""

    def set_weights(self, weights: Any, version: int) -> None: ...

    def sample_tasks(self, tasks: list[Task]) -> list[TaskBatch]: ...

    def close(self) -> None: ...


class Learner(Protocol):
    """The central meta-learner: one outer update per meta-batch."""

    version: int

    def update(self, batches: list[TaskBatch]) -> dict[str, float]: ...

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class Buffer(Protocol):
    """The run's experience buffer (rows in the singular vocabulary of ``replay.convert``)."""

    def add(self, block: Mapping[str, np.ndarray]) -> int: ...

    def save(self, path: str | os.PathLike) -> Path: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Where a run samples, buffers and evaluates: in this process or on Ray."""

    sampler: Sampler
    buffer: Buffer

    def open(self, state: TrainState, initial_buffer: Path | None = None) -> None:
        """Start the run's parts; may move ``state.learner`` elsewhere; ``initial_buffer``: a saved buffer
        (``buffer.npz`` of a checkpoint) to start from."""

    def add_experience(self, state: TrainState, batches: list[TaskBatch]) -> None:
        """Account for (and, where the sampler has not, store) one iteration's episodes."""

    def evaluate(self, state: TrainState, modes: list[str], progress: bool = False,
                 final: bool = False) -> dict[str, dict]:
        """``{mode: summarize(per-task returns)}`` on the held-out tasks with the learner's weights;
        ``final``: training is over (the sampler's resources may go to evaluation)."""

    def describe(self) -> str | None:
        """One line about where the run's parts live (None: nothing to say)."""

    def report(self) -> dict:
        """Extra counters for ``metrics.json`` (e.g. the buffer actor's restarts)."""

    def close(self) -> None:
        """Release everything ``open`` started (idempotent)."""


class Callback:
    """Hooks of :func:`~ssm_metarl_ray.training.experiment.run_experiment` (override what you need)."""

    def on_start(self, state: TrainState, backend: Backend) -> None:
        """After restore and ``backend.open``, before the first iteration."""

    def on_iteration(self, state: TrainState, metrics: dict, backend: Backend) -> None:
        """After every meta-iteration (``metrics``: that iteration's, also appended to the history)."""

    def on_end(self, state: TrainState, backend: Backend) -> None:
        """After the last iteration (also when there was none left: a run resumed at its end)."""
