"""The outer training loop: sample tasks -> collect -> MetaMAML update -> broadcast -> log/checkpoint.

``meta_train`` runs with any sampler that has ``set_weights(weights, version)`` and
``sample_tasks(tasks) -> list[TaskBatch]``: :class:`LocalSampler` (in-process, zero remote workers)
or the Ray runtime's worker pool. The same function is what the CLI, Ray jobs and Tune trials call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ssm_metarl_ray.algorithms.maml import MetaLearner
from ssm_metarl_ray.config import ConfigError, ExperimentConfig, MetaConfig
from ssm_metarl_ray.envs import Task, make_env, task_splits
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.replay.episode_ids import EpisodeIds, episodes_of, episodes_per_slot
from ssm_metarl_ray.rollout.worker import RolloutWorker
from ssm_metarl_ray.training.protocols import Learner, Sampler
from ssm_metarl_ray.types import EnvSpec, TaskBatch
from ssm_metarl_ray.utils.seeding import seed_everything
from ssm_metarl_ray.utils.threads import limit_blas_threads


def sample_chunk_seeded(worker: RolloutWorker, tasks: list[Task], seed: int, version: int,
                        first_slot: int) -> list[TaskBatch]:
    """``worker.sample_tasks(tasks)`` with RNG streams keyed on (seed, weights version, first slot).

    The data of a chunk of tasks then does not depend on which process collects it or when, so the local
    and the Ray sampler produce identical batches for the same chunking, a resubmitted chunk reproduces
    itself, and a resumed run continues exactly as an uninterrupted one.
    """
    worker.rng = np.random.default_rng([seed, version, first_slot])
    torch.manual_seed(int(worker.rng.integers(2**63)))  # action sampling uses torch's global RNG
    return worker.sample_tasks(tasks)


def task_chunks(num_tasks: int, tasks_per_chunk: int | None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` slices of the meta-batch; None: one chunk (one batched rollout)."""
    size = tasks_per_chunk or max(1, num_tasks)
    return [(a, min(num_tasks, a + size)) for a in range(0, num_tasks, size)]


class LocalSampler:
    """Collects every task's MetaMAML data in this process with one RolloutWorker.

    ``tasks_per_chunk``: tasks per batched rollout (None: the whole meta-batch at once). Sampling is
    seeded per chunk, so the Ray sampler with the same chunking returns identical data.
    """

    def __init__(self, cfg: ExperimentConfig, seed: int, tasks_per_chunk: int | None = None):
        self.worker = RolloutWorker(cfg.env, cfg.model, cfg.meta, cfg.meta.episodes_per_task, seed)
        self.seed, self.tasks_per_chunk = seed, tasks_per_chunk

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        self.worker.set_weights(weights, version)

    def sample_tasks(self, tasks: list[Task]) -> list[TaskBatch]:
        v = self.worker.version
        return [b for a, z in task_chunks(len(tasks), self.tasks_per_chunk)
                for b in sample_chunk_seeded(self.worker, tasks[a:z], self.seed, v, a)]

    def close(self) -> None:
        """Nothing to release (the Sampler protocol's ``close``)."""


@dataclass
class TrainState:
    cfg: ExperimentConfig
    spec: EnvSpec
    learner: Learner  # MetaLearner / PPOLearner, or the Ray runtime's RemoteLearner
    buffer: ExperienceBuffer
    train_tasks: list[Task]
    test_tasks: list[Task]
    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    episode_counter: int = 0
    env_steps: int = 0


def build_state(cfg: ExperimentConfig) -> TrainState:
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    limit_blas_threads(1)  # numpy's baseline fits beside torch: one BLAS thread (benchmarks/blas_threads.py)
    env = make_env(cfg.env)
    spec = EnvSpec.of(env)
    train_tasks, test_tasks = task_splits(env, cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)
    policy = spec.make_policy(cfg.model)
    buffer = ExperienceBuffer(cfg.adapt.buffer_size, spec.obs_dim, 1 if spec.discrete else spec.act_dim,
                              spec.discrete)
    return TrainState(cfg, spec, make_learner(policy, cfg, spec.task_dim), buffer, train_tasks, test_tasks)


def make_learner(policy, cfg: ExperimentConfig, task_dim: int = 0) -> Learner:
    """The central learner of ``cfg.meta.method``: MetaLearner (maml) or PPOLearner (in-context);
    ``task_dim``: the family's number of task parameters (the PPO learner's task-inference head)."""
    if cfg.meta.method == "in-context":
        from ssm_metarl_ray.algorithms.ppo import PPOLearner

        return PPOLearner(policy, cfg.meta, cfg.seed, total_updates=cfg.iterations, task_dim=task_dim)
    return MetaLearner(policy, cfg.meta)


def add_to_buffer(state: TrainState, batches: list[TaskBatch]) -> None:
    """Store one iteration's episodes in ``state.buffer``: slot ``s``'s ids from ``state.episode_counter + s
    * E`` on (E: ``episodes_per_slot``), the ids ``EpisodeIds.for_slot`` gives the Ray workers."""
    per_slot = episodes_per_slot(state.cfg.meta, state.spec.horizon)
    for s, b in enumerate(batches):
        for block in EpisodeIds(state.episode_counter + s * per_slot).blocks(episodes_of([b])):
            state.buffer.add(block)
    state.episode_counter += len(batches) * per_slot


def count_experience(state: TrainState, batches: list[TaskBatch]) -> None:
    """``add_experience`` for samplers whose workers write to a shared buffer themselves (Ray runtime)."""
    state.episode_counter += len(batches) * episodes_per_slot(state.cfg.meta, state.spec.horizon)


def distinct_task_indices(tasks: Sequence[Task]) -> list[int]:
    """Index of the first task of each distinct parameter set, in order (halfcheetah-dir: two)."""
    seen: dict[str, int] = {}
    for i, t in enumerate(tasks):
        seen.setdefault(repr(sorted(t.params.items())), i)
    return list(seen.values())


def task_groups(tasks: Sequence[Task]) -> list[np.ndarray]:
    """Indices of the tasks of each distinct parameter set, in order of first appearance (halfcheetah-dir:
    the forward and the backward ones)."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(repr(sorted(t.params.items())), []).append(i)
    return [np.asarray(g) for g in groups.values()]


def check_balanced(meta: MetaConfig, groups: Sequence[np.ndarray]) -> None:
    """``meta.balanced_tasks`` needs a meta-batch that holds every distinct training task equally often."""
    if meta.balanced_tasks and meta.meta_batch_size % len(groups):
        raise ConfigError(f"meta.balanced_tasks needs a meta-batch size that is a multiple of the number of "
                          f"distinct training tasks ({len(groups)}), got {meta.meta_batch_size}", "meta.balanced_tasks")


def meta_batch_indices(rng: np.random.Generator, num_tasks: int, meta: MetaConfig, iteration: int,
                       turns: Sequence[int] = (), groups: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Training-task indices (meta_batch_size,) of 0-based meta-iteration ``iteration``, drawn with
    replacement; during the warm-up (``meta.warmup_iterations``) from the first ``meta.warmup_tasks`` only
    (schedule "pool"), or (schedule "in-turn") all equal to ``turns[phase % len(turns)]``, ``turns`` being
    ``distinct_task_indices`` of the training tasks and ``phase`` the warm-up's equal part it is in. With
    ``meta.balanced_tasks`` (after any warm-up) ``meta_batch_size / len(groups)`` from each of ``groups``
    (:func:`task_groups`), group by group."""
    warm = iteration < meta.warmup_iterations
    if meta.balanced_tasks and not warm:
        per = meta.meta_batch_size // len(groups)
        return np.concatenate([g[rng.integers(len(g), size=per)] for g in groups])
    idx = rng.choice(meta.warmup_tasks if warm else num_tasks, meta.meta_batch_size)  # one stream for both
    if warm and meta.warmup_schedule == "in-turn":
        phase = iteration * meta.warmup_tasks // meta.warmup_iterations
        return np.full_like(idx, turns[phase % len(turns)])
    return idx


def meta_train(state: TrainState, sampler: Sampler, on_iteration: Callable[[TrainState, dict], None] | None = None,
               add_experience: Callable[[TrainState, list[TaskBatch]], None] = add_to_buffer) -> TrainState:
    """Run meta-iterations from ``state.iteration`` up to ``cfg.iterations``; returns the state."""
    cfg = state.cfg
    rng = np.random.default_rng([cfg.seed, 7])
    turns, groups = distinct_task_indices(state.train_tasks), task_groups(state.train_tasks)
    check_balanced(cfg.meta, groups)
    for i in range(state.iteration):  # resume: replay the task-sampling stream
        meta_batch_indices(rng, len(state.train_tasks), cfg.meta, i, turns, groups)
    while state.iteration < cfg.iterations:
        t0 = time.perf_counter()
        idx = meta_batch_indices(rng, len(state.train_tasks), cfg.meta, state.iteration, turns, groups)
        tasks = [state.train_tasks[i] for i in idx]
        sampler.set_weights(state.learner.get_weights(), state.learner.version)
        batches = sampler.sample_tasks(tasks)  # pre/post-adaptation trajectories per task
        t1 = time.perf_counter()
        state.env_steps += sum(ep.num_steps for b in batches for ep in [*b.pre, b.post])
        add_experience(state, batches)
        t2 = time.perf_counter()
        metrics = state.learner.update(batches)  # MetaMAML outer step(s)
        t3 = time.perf_counter()
        state.iteration += 1
        metrics.update({"iteration": state.iteration, "env_steps": state.env_steps, "time/sample_s": t1 - t0,
                        "time/experience_s": t2 - t1, "time/update_s": t3 - t2})
        state.history.append(metrics)
        if on_iteration is not None:
            on_iteration(state, metrics)
    return state
