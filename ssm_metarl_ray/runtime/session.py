"""One training run's Ray side: connect, start the buffer / rollout workers / learner, evaluate, clean up.

``runtime.backend.RayBackend`` (the Ray backend of ``training.experiment.run_experiment``) uses it like
this (the loop itself stays ``meta_train``)::

    with RaySession(cfg, rt, state.spec, out) as ray_side:
        state.learner = ray_side.learner(state.learner)      # a LearnerActor only with --learner-gpus
        meta_train(state, ray_side.sampler, on_iteration, add_experience=ray_side.add_experience)
        results = ray_side.evaluate(weights, version, state.test_tasks, modes)
    buffer_counters = ray_side.buffer_report()                # restarts, rows restored / stored / lost

``add_experience`` checks after every meta-iteration that the buffer actor holds every row the workers
collected (:meth:`BufferClient.watch`): a restart of the actor is logged as one line on stderr with what
it restored and what, if anything, is missing; ``buffer_report`` keeps the counters after ``close``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import ray
import torch

from ssm_metarl_ray.algorithms.maml import MetaLearner
from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.runtime.buffer import BufferClient, create_buffer
from ssm_metarl_ray.runtime.cluster import connect, default_num_workers, make_run_id
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.runtime.errors import ActorCallTimeout
from ssm_metarl_ray.runtime.evaluation import evaluate_parallel
from ssm_metarl_ray.runtime.gradients import WorkerGradientPool
from ssm_metarl_ray.runtime.workers import RaySampler
from ssm_metarl_ray.training.meta_train import count_experience
from ssm_metarl_ray.training.protocols import Learner
from ssm_metarl_ray.types import EnvSpec, TaskBatch

if TYPE_CHECKING:
    from ssm_metarl_ray.runtime.learner import RemoteLearner

log = logging.getLogger(__name__)


class RaySession:
    def __init__(self, cfg: ExperimentConfig, rt: RuntimeConfig, spec: EnvSpec, out: Path | None = None,
                 initial_buffer: Path | None = None):
        self.cfg, self.rt, self.spec = cfg, rt, spec
        self.owns_ray = connect(rt)
        self.run_id = rt.run_id or make_run_id()
        self.buffer: BufferClient | None = None
        self.sampler: RaySampler | None = None
        self._learner: RemoteLearner | None = None
        self._rows_collected = 0  # env steps the workers sampled (and wrote to the buffer) in this session
        self._buffer_report: dict = {}
        self._torch_threads = 0  # torch's thread count before learner() capped it (0: not capped)
        try:
            snap_dir = rt.buffer_snapshot_dir or (Path(out) / ".buffer_snapshots" if out is not None else
                                                  Path(tempfile.gettempdir()) / "ssm_metarl_buffer_snapshots")
            self.buffer = create_buffer(
                cfg.adapt.buffer_size, spec.obs_dim, 1 if spec.discrete else spec.act_dim, spec.discrete,
                self.run_id, rt, snapshot_dir=Path(snap_dir).resolve(), initial_path=initial_buffer)
            n = rt.num_workers or default_num_workers(rt.learner_cpus, rt.cpus_per_worker)
            self.sampler = RaySampler(cfg, rt, n, self.run_id, self.buffer.name)
        except BaseException:
            self.close()
            raise

    def add_experience(self, state, batches: list[TaskBatch]) -> None:
        """Count the episodes (the workers wrote them to the buffer actor) and check the actor holds them."""
        count_experience(state, batches)
        self._rows_collected += sum(ep.num_steps for b in batches for ep in [*b.pre, b.post])
        self._watch_buffer()

    def _watch_buffer(self) -> None:
        """Log restarts of the buffer actor and missing rows; never stops the run."""
        assert self.buffer is not None  # set by __init__
        try:
            self._buffer_report = dict(self.buffer.watch(self._rows_collected))
        except (ActorCallTimeout, ray.exceptions.RayError) as e:
            log.warning("experience buffer %s did not answer its durability check: %s", self.buffer.name,
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    def buffer_report(self) -> dict:
        """Buffer counters for ``metrics.json``: restarts, rows restored from snapshot / log, rows
        collected / stored / lost, duplicates skipped, snapshots, log size and time (last check)."""
        return dict(self._buffer_report)

    def describe(self) -> str:
        from ssm_metarl_ray.runtime import cluster

        assert self.sampler is not None and self.buffer is not None  # set by __init__
        names = [w.name for w in self.sampler.workers]
        url = cluster.dashboard_url
        return (f"ray: {len(names)} rollout worker(s) ({', '.join(names)}), buffer {self.buffer.name}, "
                f"namespace {self.rt.namespace!r}, cluster CPUs {ray.cluster_resources().get('CPU', 0):g}"
                + (f"; see them with: ray list actors --address http://{url}" if url else ""))

    def learner(self, local: Learner) -> Learner:
        """The driver's learner, or (``learner_gpus > 0`` / ``learner_actor``) an actor holding its state.
        A MetaMAML learner in the driver gets the rollout workers as its gradient pool (``worker_gradients``)."""
        if not (self.rt.learner_gpus > 0 or self.rt.learner_actor):
            if self.rt.worker_gradients and isinstance(local, MetaLearner) and self.sampler is not None:
                local.gradient_pool = WorkerGradientPool(self.sampler, self.rt)
                if not self.cfg.num_threads:  # the learner's share runs beside the workers': its CPUs only
                    self._torch_threads = torch.get_num_threads()  # (as a Tune trial's); restored by close()
                    torch.set_num_threads(max(1, int(self.rt.learner_cpus)))
            return local
        from ssm_metarl_ray.runtime.learner import RemoteLearner

        self._learner = RemoteLearner(self.cfg, self.spec, local, self.run_id, self.rt)
        return self._learner

    def evaluate(self, weights, version: int, tasks: list[Task], modes: list[str],
                 progress: bool = False) -> dict[str, dict]:
        """Stop the rollout workers (their CPUs go to the evaluators), then evaluate in parallel."""
        assert self.sampler is not None and self.buffer is not None  # set by __init__
        n = self.rt.num_evaluators or len(self.sampler.workers) or 1
        self.sampler.close()
        if self._learner is not None:
            self._learner.close()
            self._learner = None
        return evaluate_parallel(self.cfg, weights, version, tasks, modes, self.rt, num_evaluators=n,
                                 run_id=self.run_id, buffer_name=self.buffer.name, progress=progress)

    def close(self) -> None:
        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
            self._torch_threads = 0
        parts: tuple[RaySampler | RemoteLearner | None, ...] = (self.sampler, self._learner)
        for part in parts:
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass
        if self.buffer is not None:
            self._watch_buffer()  # a restart during the last iteration or the evaluation
            try:
                self.buffer.close()
            except Exception:
                pass
        if self.owns_ray:
            ray.shutdown()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
