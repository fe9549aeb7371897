"""Per-task meta-gradients on the rollout workers: the clipped MetaMAML update split across processes.

Between two sampling rounds the rollout workers are idle while the learner differentiates every task's
outer loss through its inner step; on a cheap task that is most of an iteration (navigation-2d, the
default job: learner 3.3x sampling before this, ``benchmarks/results/main_job.json``).
:class:`WorkerGradientPool` (given to ``MetaLearner`` by ``RaySession.learner``) splits each update's
meta-batch into contiguous shares, one per rollout worker plus the learner's own (the last, smallest one):
the shares' batches go to the object store once per update; in each outer step the learner puts the
current weights there, the workers compute their tasks' gradients (``RolloutWorkerActor.meta_gradients``
-> ``algorithms.maml.task_gradients_numpy``) while the learner computes its own, and every task's gradient
is added in task order, so the update equals the single-process one bit for bit
(``tests/test_ray_runtime.py::test_distributed_training_matches_local``).

Failures: a worker that dies, loses its result or does not answer within ``sample_timeout_s`` has its
tasks computed by the learner instead (one warning; the update is the same), and the sampler replaces a
dead worker at its next call. An exception inside the gradient code is a bug and is raised.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray

from ssm_metarl_ray.algorithms.maml import TaskGradient, task_gradient_from_numpy
from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.runtime.cluster import _first_line, get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorCallTimeout
from ssm_metarl_ray.types import TaskBatch

log = logging.getLogger(__name__)


def split_tasks(num_tasks: int, num_workers: int) -> tuple[list[list[int]], list[int]]:
    """Contiguous shares of ``range(num_tasks)``: (one per worker, the learner's own). The learner, which
    also runs the optimiser step, takes the last and (when they differ) smallest share; empty shares are
    possible when there are more processes than tasks."""
    parts = [p.tolist() for p in np.array_split(np.arange(num_tasks), num_workers + 1)]
    return parts[:-1], parts[-1]


class WorkerShards:
    """One update's split: ``local`` task indices for the learner, the rest on workers (see the module)."""

    def __init__(self, pool: WorkerGradientPool, local: list[int], remote: list[tuple[Any, list[int], Any]],
                 num_tasks: int):
        self.pool, self.local, self.remote, self.num_tasks = pool, local, remote, num_tasks

    def submit(self, weights: dict[str, np.ndarray], with_health: bool) -> list[tuple[Any, list[int], Any]]:
        """Start every worker's share at ``weights`` (one ``ray.put``); returns what :meth:`gather` takes."""
        wref = ray.put(weights)
        return [(w, idx, w.handle.meta_gradients.remote(wref, data, self.num_tasks, with_health))
                for w, idx, data in self.remote]

    def gather(self, pending: list[tuple[Any, list[int], Any]], compute) -> dict[int, TaskGradient]:
        """The workers' :class:`TaskGradient` by task index; ``compute(i)`` stands in for a failed worker."""
        out: dict[int, TaskGradient] = {}
        for w, idx, ref in pending:
            try:
                data = get(ref, self.pool.rt.sample_timeout_s, f"meta-gradients on rollout worker {w.name}")
                out.update({i: task_gradient_from_numpy(d) for i, d in zip(idx, data)})
            except (ActorCallTimeout, ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
                self.pool.fallbacks += 1
                log.warning("rollout worker %s did not return its meta-gradients (%s): the learner computes "
                            "tasks %s itself", w.name, _first_line(e), idx)
                out.update({i: compute(i) for i in idx})
            except ray.exceptions.RayTaskError as e:  # a bug in the gradient code: never masked
                cause = getattr(e, "cause", None) or e
                raise RuntimeError(f"meta-gradients on rollout worker {w.name} failed: {_first_line(cause)}") from e
        return out


class WorkerGradientPool:
    """``MetaLearner``'s ``gradient_pool`` over a :class:`~ssm_metarl_ray.runtime.workers.RaySampler`'s
    current workers (read at every update, so replaced workers are used and dropped ones are not)."""

    def __init__(self, sampler: Any, rt: RuntimeConfig):
        self.sampler, self.rt = sampler, rt
        self.fallbacks = 0  # worker shares the learner had to compute itself, over the run

    def start(self, batches: list[TaskBatch], cfg: MetaConfig) -> WorkerShards:
        workers = list(self.sampler.workers)
        shares, local = split_tasks(len(batches), len(workers))
        remote = [(w, idx, ray.put([batches[i] for i in idx])) for w, idx in zip(workers, shares) if idx]
        return WorkerShards(self, local, remote, len(batches))
