"""The one experiment path: ``run_experiment(cfg, backend, callbacks)``.

Build the state (seeded), restore it from a checkpoint when asked, open the backend (local or Ray),
run :func:`~ssm_metarl_ray.training.meta_train.meta_train` with the backend's sampler and buffer, and
close the backend whatever happens. What a caller does around the loop (progress lines, periodic
checkpoints, the final evaluation and outputs of ``ssm-metarl train``; evaluation + ``tune.report`` of a
Tune trial) are :class:`~ssm_metarl_ray.training.protocols.Callback` s.

:class:`LocalBackend` keeps everything in this process; ``runtime.backend.RayBackend`` is its Ray twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.training.checkpoint import restore_training_state
from ssm_metarl_ray.training.evaluate import evaluate_modes
from ssm_metarl_ray.training.meta_train import LocalSampler, TrainState, add_to_buffer, build_state, meta_train
from ssm_metarl_ray.training.protocols import Backend, Buffer, Callback, Sampler
from ssm_metarl_ray.types import TaskBatch
from ssm_metarl_ray.utils.checkpoint import BUFFER, load_buffer


class LocalBackend:
    """Sampling, buffer and evaluation in this process. ``sampler``: use this one instead of a
    :class:`LocalSampler` (tests inject failing samplers)."""

    def __init__(self, sampler: Sampler | None = None):
        self._given = sampler
        self.sampler: Sampler
        self.buffer: Buffer

    def open(self, state: TrainState, initial_buffer: Path | None = None) -> None:
        if initial_buffer is not None:
            loaded = load_buffer(initial_buffer.parent)
            if loaded is not None:
                state.buffer = loaded
        self.buffer = state.buffer
        self.sampler = self._given or LocalSampler(state.cfg, seed=state.cfg.seed)

    def add_experience(self, state: TrainState, batches: list[TaskBatch]) -> None:
        add_to_buffer(state, batches)

    def evaluate(self, state: TrainState, modes: list[str], progress: bool = False,
                 final: bool = False) -> dict[str, dict]:
        return evaluate_modes(state.cfg, state.learner.get_weights(), state.test_tasks, state.buffer, modes,
                              state.learner.version, progress=progress)

    def describe(self) -> str | None:
        return None

    def report(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def run_experiment(cfg: ExperimentConfig, backend: Backend, callbacks: Sequence[Callback] = (),
                   resume: Path | None = None) -> TrainState:
    """Meta-train ``cfg`` on ``backend`` from scratch or from the checkpoint directory ``resume``;
    returns the final state (the backend is closed by then)."""
    state = build_state(cfg)
    initial_buffer = None
    if resume is not None:
        restore_training_state(state, resume)
        initial_buffer = resume / BUFFER if (resume / BUFFER).is_file() else None
    try:
        backend.open(state, initial_buffer)
        for cb in callbacks:
            cb.on_start(state, backend)

        def on_iteration(st: TrainState, m: dict) -> None:
            for cb in callbacks:
                cb.on_iteration(st, m, backend)

        meta_train(state, backend.sampler, on_iteration, backend.add_experience)
        for cb in callbacks:
            cb.on_end(state, backend)
    finally:
        backend.close()
    return state
