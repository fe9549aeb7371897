"""The shared ExperienceBuffer actor of one run, and the driver's handle on it.

One named actor per run (``ssm-metarl:<run id>:buffer``), ``num_cpus=0``, holding the core
:class:`~ssm_metarl_ray.replay.buffer.ExperienceBuffer`. Rollout workers add whole task blocks to it
directly, so bulk data never passes through the driver; evaluators sample whole episodes from it.

Concurrency: writes run in a one-thread ``write`` group, reads in a four-thread ``read`` group, so a
slow reader never delays a writer (and the other way round). Ray (de)serialises arguments and results
outside the method body; inside, a lock guards the in-memory ring for the microseconds of a copy.

Durability: the actor snapshots the buffer (``ExperienceBuffer.save`` + a small JSON sidecar) after
every ``snapshot_every_adds`` adds, or at the first add ``snapshot_every_s`` seconds after the last
snapshot. When Ray restarts the actor (``max_restarts``), ``__init__`` reloads that snapshot. What can be
lost is exactly the adds *completed* after the last snapshot: at most ``snapshot_every_adds - 1`` blocks
(fewer when the time rule fires first). Adds in flight at the crash are retried by Ray on the restarted
actor (``max_task_retries``); blocks carry a key (weights version, first meta-batch slot, tasks), so a
retried or resubmitted block that the buffer already holds is not stored twice. Rollout workers wait for
their add before returning a chunk, so a chunk the driver has received is in the buffer (or its loss was
logged). The actor is pinned to the driver's node, where the snapshot directory is; if that node is
lost, the run (whose driver lived there) is lost too and continues from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.runtime.cluster import actor_name, get

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, concurrency_groups={"write": 1, "read": 4})
class ExperienceBufferActor:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, discrete: bool, snapshot_path: str | None,
                 snapshot_every_adds: int = 50, snapshot_every_s: float = 60.0,
                 initial_path: str | None = None):
        self._lock = threading.Lock()
        self._buf = ExperienceBuffer(capacity, obs_dim, act_dim, discrete)
        self._snap = Path(snapshot_path) if snapshot_path else None
        self._every_adds, self._every_s = snapshot_every_adds, snapshot_every_s
        self._keys: set[str] = set()  # (version:slot) of stored blocks: retried/resubmitted adds are skipped
        self._adds = self._snap_adds = self._snapshots = self._duplicates = 0
        self._snap_time = time.monotonic()
        self._restored: dict | None = None
        # create_buffer removes a stale snapshot before the first start, so an existing one means that
        # Ray restarted this actor
        if self._snap is not None and self._snap.is_file():
            self._restore(self._snap, "snapshot")
        elif initial_path:  # resuming a run from its checkpoint
            self._restore(Path(initial_path), "checkpoint")

    def _restore(self, path: Path, what: str) -> None:
        self._buf = ExperienceBuffer.load(path)
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
        if meta.get("num_added") == self._buf.num_added:  # sidecar belongs to this npz
            self._keys = set(meta.get("keys", []))
            self._adds = self._snap_adds = int(meta.get("adds", 0))
        self._restored = {"from": what, "path": str(path), "rows": len(self._buf), "adds": self._adds}

    # ---- writes ---------------------------------------------------------------------------------
    @ray.method(concurrency_group="write")
    def add(self, block: dict[str, np.ndarray], key: str | None = None) -> int:
        """Append one block of transitions (``episodes_to_block`` output); returns the buffer size."""
        with self._lock:
            if key is not None and key in self._keys:
                self._duplicates += 1
                return len(self._buf)
            self._buf.add(block)
            if key is not None:
                self._keys.add(key)
            self._adds += 1
            size = len(self._buf)
        if self._snap is not None and (self._adds - self._snap_adds >= self._every_adds
                                       or time.monotonic() - self._snap_time >= self._every_s):
            self._snapshot()
        return size

    @ray.method(concurrency_group="write")
    def snapshot(self) -> str | None:
        return str(self._snapshot()) if self._snap is not None else None

    def _snapshot(self) -> Path:
        with self._lock:  # copy under the lock, write to disk outside it (reads go on meanwhile)
            state = self._buf.state_dict()
            meta = {"num_added": self._buf.num_added, "adds": self._adds, "keys": sorted(self._keys)}
        self._snap.parent.mkdir(parents=True, exist_ok=True)
        ExperienceBuffer.from_state_dict(state).save(self._snap)
        tmp = self._snap.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._snap.with_suffix(".json"))
        self._snap_adds, self._snap_time = meta["adds"], time.monotonic()
        self._snapshots += 1
        return self._snap

    # ---- reads ----------------------------------------------------------------------------------
    @ray.method(concurrency_group="read")
    def sample_sequences(self, batch_size: int, seq_len: int, seed: int, task_id: int | None = None,
                         episode_start: bool = False) -> dict[str, np.ndarray] | None:
        """``ExperienceBuffer.sample_sequences`` with an RNG seeded per call; None while empty."""
        rng = np.random.default_rng(seed)
        with self._lock:
            if len(self._buf) == 0:
                return None
            return self._buf.sample_sequences(batch_size, seq_len, rng, task_id=task_id,
                                              episode_start=episode_start)

    @ray.method(concurrency_group="read")
    def state_dict(self) -> dict[str, np.ndarray]:
        with self._lock:
            return self._buf.state_dict()

    @ray.method(concurrency_group="read")
    def stats(self) -> dict:
        with self._lock:
            return {"size": len(self._buf), "num_added": self._buf.num_added, "adds": self._adds,
                    "snapshot_adds": self._snap_adds, "snapshots": self._snapshots,
                    "duplicates_skipped": self._duplicates, "restored": self._restored,
                    "task_ids": self._buf.task_ids().tolist() if len(self._buf) else [], "pid": os.getpid(),
                    "node_id": ray.get_runtime_context().get_node_id()}


class BufferClient:
    """The driver's handle: ``save(path)`` (what ``save_checkpoint`` calls), ``stats()``, ``close()``."""

    def __init__(self, handle, name: str, snapshot_path: Path | None, timeout_s: float):
        self.handle, self.name, self.snapshot_path, self.timeout_s = handle, name, snapshot_path, timeout_s

    def save(self, path: str | os.PathLike) -> Path:
        state = get(self.handle.state_dict.remote(), self.timeout_s, "experience buffer state_dict")
        return ExperienceBuffer.from_state_dict(state).save(path)

    def stats(self) -> dict:
        return get(self.handle.stats.remote(), self.timeout_s, "experience buffer stats")

    def __len__(self) -> int:
        return int(self.stats()["size"])

    def close(self) -> None:
        ray.kill(self.handle, no_restart=True)
        self.remove_snapshot()
        if self.snapshot_path is not None:
            try:
                self.snapshot_path.parent.rmdir()  # only when empty (the default dir is per output dir)
            except OSError:
                pass

    def remove_snapshot(self) -> None:
        if self.snapshot_path is not None:
            for p in (self.snapshot_path, self.snapshot_path.with_suffix(".json")):
                p.unlink(missing_ok=True)


def create_buffer(capacity: int, obs_dim: int, act_dim: int, discrete: bool, run_id: str, *,
                  snapshot_dir: str | os.PathLike | None, snapshot_every_adds: int = 50,
                  snapshot_every_s: float = 60.0, initial_path: str | os.PathLike | None = None,
                  max_restarts: int = 3, namespace: str = "ssm_metarl", timeout_s: float = 60.0
                  ) -> BufferClient:
    """Start the run's buffer actor on this (the driver's) node and wait until it is up.

    Pinned (hard node affinity; soft affinity was not honoured in tests): it needs no CPU, its snapshot
    and the checkpoint are on this node's disk, and a run whose driver node is gone is over anyway.
    """
    snap = Path(snapshot_dir) / f"{run_id}.buffer.npz" if snapshot_dir is not None else None
    name = actor_name(run_id, "buffer")
    BufferClient(None, name, snap, timeout_s).remove_snapshot()  # a leftover of an earlier run with this id
    handle = ExperienceBufferActor.options(
        name=name, namespace=namespace, max_restarts=max_restarts,
        max_task_retries=max_restarts,  # reads are idempotent; adds are keyed, so retries are safe
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                           soft=False),
    ).remote(capacity, obs_dim, act_dim, discrete, str(snap) if snap else None, snapshot_every_adds,
             snapshot_every_s, str(initial_path) if initial_path else None)
    client = BufferClient(handle, name, snap, timeout_s)
    client.stats()  # surfaces constructor errors (e.g. an unreadable initial buffer) here
    return client
