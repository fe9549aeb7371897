"""Settings of the Ray runtime (kept apart from :mod:`ssm_metarl_ray.config`, which describes the experiment).

No Ray import here: the CLI validates these settings before anything starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RuntimeConfig:
    num_workers: int | None = None  # rollout-worker actors; None: CPUs Ray sees minus the learner's (>= 1)
    address: str | None = None  # attach to this cluster (else RAY_ADDRESS, else start a local one)
    num_cpus: int | None = None  # CPUs of a locally started cluster (None: all of this machine)
    include_dashboard: bool = False  # local cluster only; needed by `ray list actors`
    object_store_memory: int = 512 * 1024**2  # bytes, local cluster only
    namespace: str = "ssm_metarl"  # Ray namespace of the named actors
    run_id: str | None = None  # part of every actor name (a Tune trial passes its trial id); None: generated

    # ---- learner --------------------------------------------------------------------------
    learner_gpus: float = 0.0  # > 0: the learner runs in an actor with this many GPUs
    learner_cpus: float = 1.0  # CPUs the learner needs (the driver's or the learner actor's)
    learner_actor: bool = False  # force the learner actor even with 0 GPUs (tests, CPU-only clusters)
    worker_gradients: bool = True  # the rollout workers compute a share of the clipped MetaMAML update's
    #   per-task meta-gradients between sampling rounds (runtime/gradients.py; the same update); only with
    #   the learner in the driver

    # ---- rollout workers -------------------------------------------------------------------
    cpus_per_worker: float = 1.0
    spread_workers: bool = True  # SPREAD scheduling: workers go to different nodes when possible
    tasks_per_chunk: int | None = None  # tasks per request (one batched rollout); None: meta-batch / workers
    max_inflight_per_worker: int = 2  # queued requests per worker (pipelining hides the call latency)
    worker_max_restarts: int = 3  # Ray restarts a crashed worker process this often ...
    worker_max_task_retries: int = 1  # ... and retries its in-flight call this often (finite: no poison pill)
    max_worker_failures: int = 4  # deaths/hangs tolerated per iteration before sampling gives up

    # ---- timeouts (seconds) -----------------------------------------------------------------
    sample_timeout_s: float = 300.0  # a worker with queued tasks and no result for this long is hung
    startup_timeout_s: float = 120.0  # actor creation (process start, imports, env construction)
    call_timeout_s: float = 60.0  # short calls: buffer reads/writes, pings, weights
    long_call_timeout_s: float = 3600.0  # learner updates and evaluation chunks

    # ---- experience buffer actor --------------------------------------------------------------
    buffer_snapshot_every_adds: int = 50  # snapshot after this many adds ...
    buffer_snapshot_every_s: float = 60.0  # ... or at the first add this long after the last snapshot
    buffer_snapshot_dir: str | None = None  # None: <output-dir>/.buffer_snapshots (or a temp dir)
    buffer_max_restarts: int = 3
    buffer_log: bool = True  # append every add to a block log (flushed) replayed after a restart
    buffer_log_fsync: bool = False  # also fsync each record (survives an OS crash, not just the actor's)

    # ---- evaluation / checkpoints ----------------------------------------------------------------
    num_evaluators: int | None = None  # evaluator actors; None: as many as rollout workers; 0: evaluate
    # during a run (a Tune trial's reports) in the driver, replaying from the buffer actor
    cpus_per_evaluator: float | None = None  # None: cpus_per_worker
    checkpoint_every: int = 0  # save a resumable checkpoint every K iterations (0: only at the end)

    @property
    def use_ray(self) -> bool:
        return self.num_workers != 0

    @property
    def evaluator_cpus(self) -> float:
        return self.cpus_per_worker if self.cpus_per_evaluator is None else self.cpus_per_evaluator

    def problems(self) -> list[str]:
        """One message per bad value (the CLI turns the first into a one-line error, exit code 2)."""
        out = []
        if self.num_workers is not None and self.num_workers < 0:
            out.append(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.address is not None and not self.address.strip():
            out.append("--address must not be empty")
        if not (math.isfinite(self.learner_gpus) and self.learner_gpus >= 0):
            out.append(f"--learner-gpus must be a finite number >= 0, got {self.learner_gpus}")
        if self.checkpoint_every < 0:
            out.append(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.num_workers == 0 and self.address:
            out.append("--address needs Ray workers; drop --num-workers 0")
        if self.num_workers == 0 and (self.learner_gpus > 0 or self.learner_actor):
            out.append("--learner-gpus needs the Ray runtime; drop --num-workers 0")
        for name in ("sample_timeout_s", "startup_timeout_s", "call_timeout_s", "long_call_timeout_s",
                     "buffer_snapshot_every_s", "cpus_per_worker"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                flag = "--sample-timeout" if name == "sample_timeout_s" else name
                out.append(f"{flag} must be a finite number > 0, got {v}")
        for name in ("max_inflight_per_worker", "buffer_snapshot_every_adds"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("worker_max_restarts", "worker_max_task_retries", "max_worker_failures",
                     "buffer_max_restarts"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tasks_per_chunk is not None and self.tasks_per_chunk < 1:
            out.append(f"tasks_per_chunk must be >= 1, got {self.tasks_per_chunk}")
        if self.num_evaluators is not None and self.num_evaluators < 0:
            out.append(f"num_evaluators must be >= 0, got {self.num_evaluators}")
        if self.cpus_per_evaluator is not None and not (math.isfinite(self.cpus_per_evaluator)
                                                        and self.cpus_per_evaluator >= 0):
            out.append(f"cpus_per_evaluator must be a finite number >= 0, got {self.cpus_per_evaluator}")
        return out


def trial_bundles(r: dict[str, Any]) -> list[dict[str, float]]:
    """Placement-group bundles of one trial: [trial/learner, rollout workers..., evaluators...].

    The experience buffer actor needs 0 CPU and so no bundle; with ``num_workers: 0`` the trial samples,
    buffers and evaluates in its own process (one bundle)."""
    out = [{"CPU": float(r["learner_cpus"])}]
    if r["num_workers"] > 0:
        out += [{"CPU": float(r["cpus_per_worker"])} for _ in range(r["num_workers"])]
        out += [{"CPU": float(r["cpus_per_evaluator"])} for _ in range(r["num_evaluators"])]
    return out
