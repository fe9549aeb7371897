"""Rollout-worker actors and :class:`RaySampler`, the Ray twin of ``training.meta_train.LocalSampler``.

Weights: ``set_weights`` puts the weights in the object store ONCE per iteration; every sample request
carries that ref and its version as top-level arguments, so each worker (also one that Ray just
restarted, or a replacement) loads them before sampling and skips versions it already has. Every
returned batch is checked to carry the requested ``weights_version``.

Work distribution: the meta-batch is cut into chunks of ``tasks_per_chunk`` tasks (default: one chunk
per worker); a chunk is one request, sampled as one batched rollout and seeded on (seed, version, first
slot) (``training.meta_train.sample_chunk_seeded``), so ``LocalSampler(tasks_per_chunk=same)`` returns
identical data. At most ``max_inflight_per_worker`` requests are queued per worker; results are gathered
with ``ray.wait(timeout=...)`` and returned in task order.

Failures: a worker process that crashes is restarted by Ray (``max_restarts``) and its in-flight call
retried (``max_task_retries``, finite). When that is exhausted the call raises; the sampler then
replaces the worker with a fresh actor and resubmits its tasks. A worker with queued tasks that returns
nothing for ``sample_timeout_s`` is considered hung: killed, replaced, tasks resubmitted. A replacement
that cannot start within ``startup_timeout_s`` (e.g. its node is gone and no CPU is free) is dropped and
the remaining workers finish the iteration. More than ``max_worker_failures`` failures in one call, or no
worker left, raise :class:`SamplingError` with the reason - never a silent hang.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import ray

from ssm_metarl_ray.algorithms.maml import task_gradients_numpy
from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.models.policy import Policy
from ssm_metarl_ray.replay.episode_ids import EpisodeIds, episodes_of
from ssm_metarl_ray.rollout.worker import RolloutWorker
from ssm_metarl_ray.runtime.cluster import _first_line, actor_name, get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorCallTimeout, SamplingError
from ssm_metarl_ray.training.meta_train import sample_chunk_seeded, task_chunks
from ssm_metarl_ray.types import TaskBatch

log = logging.getLogger(__name__)


@ray.remote
class RolloutWorkerActor:
    """A :class:`RolloutWorker` that writes what it samples to the run's buffer actor."""

    def __init__(self, cfg: ExperimentConfig, name: str, buffer_name: str | None, rt: RuntimeConfig):
        self.worker = RolloutWorker(cfg.env, cfg.model, cfg.meta, cfg.meta.episodes_per_task, cfg.seed)
        self.cfg, self.name, self.timeout = cfg, name, rt.call_timeout_s
        self._grad_policy: Policy | None = None  # built on the first meta_gradients call
        # the buffer is looked up by name: an actor handle as constructor argument cannot survive restarts
        self.buffer = ray.get_actor(buffer_name, namespace=rt.namespace) if buffer_name else None

    def info(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "version": self.worker.version}

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> int:
        self.worker.set_weights(weights, version)
        return self.worker.version

    def sample(self, weights: dict[str, np.ndarray], version: int, tasks: list[Task], first_slot: int
               ) -> list[TaskBatch]:
        """MetaMAML data of a chunk of tasks (meta-batch slots ``first_slot``...); also sent to the buffer."""
        self.worker.set_weights(weights, version)  # no-op when this version is already loaded
        batches = sample_chunk_seeded(self.worker, tasks, self.cfg.seed, version, first_slot)
        if self.buffer is not None:
            self._add(batches, version, first_slot)
        return batches

    def meta_gradients(self, weights: dict[str, np.ndarray], batches: list[TaskBatch], num_tasks: int,
                       with_health: bool) -> list[dict]:
        """The clipped learner's per-task meta-gradients of ``batches`` at ``weights`` (``runtime/gradients.py``)."""
        if self._grad_policy is None:  # its own policy: the sampling one keeps its weights version
            self._grad_policy = self.worker.spec.make_policy(self.cfg.model)
        return task_gradients_numpy(self._grad_policy, weights, batches, self.cfg.meta, num_tasks, with_health)

    def _add(self, batches: list[TaskBatch], version: int, first_slot: int) -> None:
        """One block per request, written before the result is returned: a chunk the driver has received
        is in the buffer (exactly once: retried/resubmitted adds carry the same key and are skipped).
        Waiting costs milliseconds; not waiting would lose blocks whose writer dies before the buffer has
        fetched them (the block's owner is this process)."""
        horizon = self.worker.spec.horizon
        blocks = [block for slot, b in enumerate(batches, first_slot)  # ids as the driver's counter gives
                  for block in EpisodeIds.for_slot(self.cfg.meta, version, slot, horizon).blocks(episodes_of([b]))]
        block = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
        assert self.buffer is not None  # sample() checks
        ref: ray.ObjectRef = self.buffer.add.remote(block, key=f"{version}:{first_slot}:{len(batches)}")
        try:
            ray.get(ref, timeout=self.timeout)
        except ray.exceptions.GetTimeoutError:
            log.warning("%s: buffer add still pending after %.0f s; continuing without waiting", self.name,
                        self.timeout)
        except ray.exceptions.RayError as e:
            log.warning("%s: buffer add failed (%s); that block is not in the buffer", self.name,
                        _first_line(e))


@dataclass(eq=False)
class _Worker:
    index: int
    generation: int
    name: str
    handle: Any  # the actor's ActorHandle
    since: float = 0.0  # start of the current no-progress interval (hang detection)


def assign_chunks(load: list[int], num_chunks: int, max_inflight: int) -> list[int]:
    """Worker index for each of the next ``num_chunks`` queued chunks (fewer when every worker holds
    ``max_inflight`` requests): always the least-loaded worker, ties to the lowest index. ``load``: requests
    in flight per worker now (not modified)."""
    load, out = list(load), []
    for _ in range(num_chunks):
        if not load:
            break
        i = min(range(len(load)), key=load.__getitem__)
        if load[i] >= max_inflight:
            break
        out.append(i)
        load[i] += 1
    return out


class RaySampler:
    """``set_weights(weights, version)`` / ``sample_tasks(tasks) -> list[TaskBatch]`` over worker actors."""

    def __init__(self, cfg: ExperimentConfig, rt: RuntimeConfig, num_workers: int, run_id: str,
                 buffer_name: str | None = None):
        self.cfg, self.rt, self.run_id, self.buffer_name = cfg, rt, run_id, buffer_name
        self.tasks_per_chunk = rt.tasks_per_chunk  # None: ceil(meta-batch / workers), fixed at the first call
        self._ref: ray.ObjectRef | None = None
        self._version = -1
        self.failures = self.replacements = 0  # totals over the run (reported by stats())
        self.workers = [self._create(i, 0) for i in range(num_workers)]
        self._wait_ready(self.workers, f"{num_workers} rollout worker(s)")

    # ---- actors ---------------------------------------------------------------------------------------
    def _create(self, index: int, generation: int) -> _Worker:
        role = f"rollout-{index}" + (f"-r{generation}" if generation else "")
        name = actor_name(self.run_id, role)
        in_pg = ray.util.get_current_placement_group() is not None  # inside a Tune trial: stay in its PG
        handle = RolloutWorkerActor.options(  # type: ignore[attr-defined]  # an ActorClass at runtime
            name=name, namespace=self.rt.namespace, num_cpus=self.rt.cpus_per_worker,
            max_restarts=self.rt.worker_max_restarts, max_task_retries=self.rt.worker_max_task_retries,
            scheduling_strategy="SPREAD" if self.rt.spread_workers and not in_pg else None,
        ).remote(self.cfg, name, self.buffer_name, self.rt)
        return _Worker(index, generation, name, handle)

    def _wait_ready(self, workers: list[_Worker], what: str) -> None:
        refs = [w.handle.info.remote() for w in workers]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.rt.startup_timeout_s)
        if len(ready) < len(refs):
            self.close()
            cpus = ray.cluster_resources().get("CPU", 0)
            raise SamplingError(
                f"only {len(ready)} of {what} started within {self.rt.startup_timeout_s:g} s "
                f"(startup_timeout_s); each needs {self.rt.cpus_per_worker:g} CPU, the cluster has {cpus:g}: "
                "lower --num-workers")
        ray.get(ready)  # raises if a constructor failed

    def _replace(self, w: _Worker, reason: str, inflight: dict, todo: deque) -> None:
        """Kill ``w``, requeue its tasks, start a replacement (or drop the slot if none can start)."""
        for ref, (ww, i) in list(inflight.items()):
            if ww is w:
                del inflight[ref]
                todo.appendleft(i)
        try:
            ray.kill(w.handle, no_restart=True)
        except Exception:  # already gone
            pass
        new = self._create(w.index, w.generation + 1)
        try:
            get(new.handle.info.remote(), self.rt.startup_timeout_s, f"replacement worker {new.name}")
        except (ActorCallTimeout, ray.exceptions.RayActorError) as e:
            ray.kill(new.handle, no_restart=True)
            self.workers.remove(w)
            log.warning("rollout worker %s %s; its replacement did not start (%s): continuing with %d "
                        "worker(s)", w.name, reason, _first_line(e), len(self.workers))
        else:
            self.workers[self.workers.index(w)] = new
            self.replacements += 1
            log.warning("rollout worker %s %s: replaced by %s, its tasks resubmitted", w.name, reason,
                        new.name)
        now = time.monotonic()
        for x in self.workers:  # the wait above must not count as the others' hang time
            x.since = now

    # ---- sampler interface ----------------------------------------------------------------------------
    def set_weights(self, weights, version: int) -> None:
        """One ``ray.put`` per iteration (an ObjectRef, e.g. from a learner actor, is used as is)."""
        self._ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
        self._version = version

    def broadcast(self) -> None:
        """Push the current weights to every worker now and wait (sampling does it implicitly)."""
        get([w.handle.set_weights.remote(self._ref, self._version) for w in self.workers],
            self.rt.call_timeout_s, "weight broadcast")

    def sample_tasks(self, tasks: list[Task]) -> list[TaskBatch]:
        if self._ref is None:
            raise RuntimeError("RaySampler.set_weights must be called before sample_tasks")
        if self.tasks_per_chunk is None:  # fixed once, so a shrinking pool does not change the data
            self.tasks_per_chunk = -(-len(tasks) // max(1, len(self.workers)))
        chunks = task_chunks(len(tasks), self.tasks_per_chunk)
        todo: deque[int] = deque(range(len(chunks)))
        out: list[TaskBatch | None] = [None] * len(tasks)
        inflight: dict[ray.ObjectRef, tuple[_Worker, int]] = {}  # request -> (worker, chunk index)
        failures = 0
        while todo or inflight:
            self._dispatch(tasks, chunks, todo, inflight)
            if not inflight:
                raise SamplingError("no rollout worker left to sample with")
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=self._poll_s(inflight))
            for ref in ready:
                if ref not in inflight:  # its worker was replaced meanwhile
                    continue
                w, c = inflight.pop(ref)
                a, z = chunks[c]
                try:
                    out[a:z] = self._check(ray.get(ref), w, tasks[a:z])
                    w.since = time.monotonic()
                except ray.exceptions.RayActorError as e:
                    failures = self._failed(failures, w, f"died ({_first_line(e)})", tasks[a:z])
                    inflight[ref] = (w, c)  # so _replace requeues it with the rest
                    self._replace(w, "died", inflight, todo)
                except ray.exceptions.ObjectLostError as e:  # result lost with its node: sample it again
                    failures = self._failed(failures, w, f"lost its result ({_first_line(e)})", tasks[a:z])
                    todo.appendleft(c)
                except ray.exceptions.RayTaskError as e:  # a bug, not a crash: resubmitting would repeat it
                    cause = getattr(e, "cause", None) or e
                    raise SamplingError(f"rollout worker {w.name} failed on tasks "
                                        f"{[t.index for t in tasks[a:z]]}: {_first_line(cause)}") from e
            now = time.monotonic()
            busy = {w for w, _ in inflight.values()}
            for w in [w for w in self.workers if w in busy and now - w.since > self.rt.sample_timeout_s]:
                a, z = chunks[next(c for ww, c in inflight.values() if ww is w)]
                failures = self._failed(failures, w, f"returned nothing for {self.rt.sample_timeout_s:g} s "
                                        "(sample_timeout_s)", tasks[a:z])
                self._replace(w, "hung", inflight, todo)
        return cast("list[TaskBatch]", out)  # every slot is filled by now

    def _dispatch(self, tasks: list[Task], chunks: list[tuple[int, int]], todo: deque, inflight: dict
                  ) -> None:
        """Send queued chunks, each to the least-loaded worker (so two chunks go to two workers)."""
        load = [0] * len(self.workers)
        for w, _ in inflight.values():
            load[self.workers.index(w)] += 1
        for i in assign_chunks(load, len(todo), self.rt.max_inflight_per_worker):
            w = self.workers[i]
            if load[i] == 0:
                w.since = time.monotonic()
            load[i] += 1
            c = todo.popleft()
            a, z = chunks[c]
            inflight[w.handle.sample.remote(self._ref, self._version, tasks[a:z], a)] = (w, c)

    def _poll_s(self, inflight: dict) -> float:
        oldest = min(w.since for w, _ in inflight.values())
        return float(np.clip(oldest + self.rt.sample_timeout_s - time.monotonic(), 0.01, 1.0))

    def _failed(self, failures: int, w: _Worker, what: str, tasks: list[Task]) -> int:
        failures += 1
        self.failures += 1
        if failures > self.rt.max_worker_failures:
            self.close()
            raise SamplingError(f"rollout worker {w.name} {what} while sampling tasks "
                                f"{[t.index for t in tasks]}; {failures} worker failure(s) this iteration "
                                f"exceed max_worker_failures={self.rt.max_worker_failures}")
        return failures

    def _check(self, batches: list[TaskBatch], w: _Worker, tasks: list[Task]) -> list[TaskBatch]:
        versions = {ep.weights_version for b in batches for ep in [*b.pre, b.post]}
        got, want = [b.task_index for b in batches], [t.index for t in tasks]
        if versions != {self._version} or got != want:
            raise SamplingError(f"rollout worker {w.name} returned tasks {got} with weights version(s) "
                                f"{sorted(versions)}; expected tasks {want}, version {self._version}")
        return batches

    # ---- housekeeping ---------------------------------------------------------------------------------
    def info(self) -> list[dict]:
        return get([w.handle.info.remote() for w in self.workers], self.rt.call_timeout_s, "worker info")

    def stats(self) -> dict:
        return {"num_workers": len(self.workers), "worker_failures": self.failures,
                "worker_replacements": self.replacements}

    def close(self) -> None:
        """Kill every worker actor (idempotent)."""
        for w in self.workers:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception:
                pass
        self.workers = []

    stop = close  # the name used before the Sampler protocol
