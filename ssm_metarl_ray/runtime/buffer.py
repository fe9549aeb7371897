"""The shared ExperienceBuffer actor of one run, and the driver's handle on it.

One named actor per run (``ssm-metarl:<run id>:buffer``), ``num_cpus=0``, holding the core
:class:`~ssm_metarl_ray.replay.buffer.ExperienceBuffer`. Rollout workers add whole task blocks to it
directly, so bulk data never passes through the driver; evaluators sample whole episodes from it.

Concurrency: writes run in a one-thread ``write`` group, reads in a four-thread ``read`` group, so a
slow reader never delays a writer (and the other way round). Ray (de)serialises arguments and results
outside the method body; inside, a lock guards the in-memory ring for the microseconds of a copy.

Durability (files ``<run id>.buffer.*`` in the snapshot directory):

* **Block log** (``.log``, ``runtime/block_log.py``): every add first appends its block as one record
  (magic, length, CRC-32, then a JSON header - position ``pos`` = ``num_added`` before the add, add
  number, key - and the arrays' bytes) and flushes it to the OS before the add returns, so a killed
  actor process loses no add that returned (``buffer_log_fsync`` also survives an OS crash, at a cost).
* **Snapshot** (``.npz`` + ``.json`` sidecar with the block keys): after every ``buffer_snapshot_every_adds``
  adds, or at the first add ``buffer_snapshot_every_s`` seconds after the last one, the buffer is compacted
  into a snapshot covering the rows up to its ``num_added``, and the log is then emptied. The npz is
  written first, the sidecar second, the log truncated last; whichever step a crash interrupts, replay
  skips the records the snapshot already holds (``pos < num_added``) and takes their keys.
* **Restart**: when Ray restarts the actor (``max_restarts``), ``__init__`` loads the snapshot (or the
  checkpoint the run resumed from, or nothing), then replays the log after it. A torn last record (the
  add being written at the kill) fails its length or CRC check and is dropped and cut off the file.
  Adds in flight at the kill are retried by Ray on the restarted actor (``max_task_retries``; also
  :meth:`BufferClient.add`); blocks carry a key (weights version, first meta-batch slot, tasks), kept in
  the sidecar and in every record, so a retried add that had landed is skipped, not stored twice.

So what a restart can lose is bounded by the adds in flight (at most one block per writer, retried),
not by the snapshot interval. Each restart appends a record to ``.restarts.json`` (rows from the
snapshot and from the log, torn bytes dropped); :meth:`BufferClient.watch`, which ``RaySession`` calls
after every meta-iteration, logs one warning line per restart on the driver with what was restored and
how many of the rows the session collected are missing, and keeps the counters of ``report``.

Cost of the log (``python benchmarks/buffer_durability.py`` -> ``benchmarks/results/buffer_durability.json``,
2 shared cores, local disk): the actor spends 0.44 ms per add in ``BlockLog.append`` for a 1,200-row
navigation-2d block (59 KB) and 0.98 ms for a 4,000-row halfcheetah block (500 KB), against 5.3 / 10.6 ms
per add from the driver without the log (the end-to-end medians with the log differ by -0.6 / +1.0 ms,
within the machine's noise); with fsync 1.9 / 2.3 ms. Replaying 50 such 4,000-row blocks (24 MB) after a
kill takes 0.06 s; the restarted actor answers 1.4 s after the kill.

The actor is pinned to the driver's node, where the snapshot directory is; if that node is lost, the
run (whose driver lived there) is lost too and continues from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.runtime.block_log import BlockLog
from ssm_metarl_ray.runtime.cluster import actor_name, get
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.utils.atomic import temp_path, write_json

log = logging.getLogger(__name__)


def run_files(snapshot_path: Path) -> list[Path]:
    """Every file the buffer actor of a run may write: snapshot, sidecar, log, restart records, temps."""
    s = snapshot_path
    atomic = [s, s.with_suffix(".json"), s.with_suffix(".restarts.json")]  # written through utils/atomic
    return [*atomic, *(temp_path(p) for p in atomic), s.with_suffix(".log")]


# ---- the actor -------------------------------------------------------------------------------------
# (the ignore: Ray's stub of ray.remote lacks the concurrency_groups option)
@ray.remote(num_cpus=0, concurrency_groups={"write": 1, "read": 4})  # type: ignore[call-overload]
class ExperienceBufferActor:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, discrete: bool, snapshot_path: str | None,
                 initial_path: str | None, rt: RuntimeConfig):
        self._lock = threading.Lock()
        self._buf = ExperienceBuffer(capacity, obs_dim, act_dim, discrete)
        self._snap = Path(snapshot_path) if snapshot_path else None
        self._log = (BlockLog(self._snap.with_suffix(".log"), rt.buffer_log_fsync) if self._snap and rt.buffer_log
                     else None)
        self._every_adds, self._every_s = rt.buffer_snapshot_every_adds, rt.buffer_snapshot_every_s
        self._keys: set[str] = set()  # (version:slot:tasks) of stored blocks: retried adds are skipped
        self._adds = self._snap_adds = self._snapshots = self._duplicates = 0
        self._snap_time = time.monotonic()
        # create_buffer removes the run's files before the first start, so a snapshot or a log here means
        # that Ray restarted this actor
        self._restored = self._recover(Path(initial_path) if initial_path else None)
        self._restarts: list[dict] = []
        with warnings.catch_warnings():  # Ray 2.60 warns about an API that this property uses internally
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            self._record_restart()

    def _recover(self, initial_path: Path | None) -> dict:
        """Load the snapshot (else the resumed checkpoint, else nothing), then replay the log after it."""
        t0 = time.perf_counter()
        path: Path | None
        if self._snap is not None and self._snap.is_file():
            what, path = "snapshot", self._snap
        else:
            what, path = ("checkpoint", initial_path) if initial_path else ("empty", None)
        if path is not None:
            self._buf = ExperienceBuffer.load(path)
        if what == "snapshot":
            self._load_sidecar()
        base_rows = len(self._buf)
        replay = self._replay() if self._log is not None else {}
        return {"from": what, "path": str(path) if path else None, "rows": len(self._buf), "adds": self._adds,
                "base_rows": base_rows, **replay, "seconds": time.perf_counter() - t0}

    def _load_sidecar(self) -> None:
        """Keys and add count of the snapshot (a sidecar one snapshot older is a subset: still right)."""
        assert self._snap is not None  # called after loading a snapshot only
        side = self._snap.with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
        self._keys.update(meta.get("keys", []))
        self._adds = self._snap_adds = int(meta.get("adds", 0))
        self._snapshots = int(meta.get("snapshots", 0))

    def _replay(self) -> dict:
        """Add the log's records the base does not hold; cut a torn tail; open the log for appending."""
        out = {"log_records": 0, "log_rows": 0, "log_skipped": 0, "gap_rows": 0}
        good = 0
        assert self._log is not None  # called when there is a log only
        for good, meta, block in self._log.records():  # noqa: B007 (good: the offset after the last record)
            if meta.get("key") is not None:
                self._keys.add(meta["key"])
            self._adds = max(self._adds, int(meta.get("seq", 0)))
            if meta["pos"] < self._buf.num_added:  # the snapshot already holds it
                out["log_skipped"] += 1
                continue
            out["gap_rows"] += meta["pos"] - self._buf.num_added  # rows neither base nor log hold (0)
            self._buf.add(block)
            out["log_records"] += 1
            out["log_rows"] += len(block["rewards"])
        out["torn_bytes"] = self._log.open(good)
        return out

    def _record_restart(self) -> None:
        """Append this restart to ``<run>.buffer.restarts.json`` (kept across restarts) and remember them."""
        path = self._snap.with_suffix(".restarts.json") if self._snap is not None else None
        records = json.loads(path.read_text()) if path is not None and path.is_file() else []
        records.append({"restart": len(records) + 1 if path is not None else None, "pid": os.getpid(),
                        "time": time.time(), **self._restored})
        if path is not None:
            write_json(path, records)
        self._restarts = records

    # ---- writes ---------------------------------------------------------------------------------
    @ray.method(concurrency_group="write")
    def add(self, block: dict[str, np.ndarray], key: str | None = None) -> int:
        """Append one block of transitions (``episodes_to_block`` output); returns the buffer size.

        The block is in the log (flushed) before it is in memory, and an add that fails is taken out
        of the log again; a ``key`` the buffer already holds makes the add a no-op.
        """
        with self._lock:
            if key is not None and key in self._keys:
                self._duplicates += 1
                return len(self._buf)
            pos = self._buf.num_added
        mark = self._log.append(block, {"pos": pos, "seq": self._adds + 1, "key": key}) if self._log else None
        try:
            with self._lock:
                self._buf.add(block)
                if key is not None:
                    self._keys.add(key)
                self._adds += 1
                size = len(self._buf)
        except BaseException:
            if mark is not None and self._log is not None:  # a mark comes from the log
                self._log.rollback(mark)
            raise
        if self._snap is not None and (self._adds - self._snap_adds >= self._every_adds
                                       or time.monotonic() - self._snap_time >= self._every_s):
            self._compact()
        return size

    def _compact(self) -> None:
        """Snapshot after an add; a failure (disk full) keeps the log, so the add still counts as stored."""
        try:
            self._snapshot()
        except OSError as e:
            self._snap_adds, self._snap_time = self._adds, time.monotonic()  # retry at the next interval
            log.warning("buffer snapshot to %s failed (%s); the block log keeps every add", self._snap, e)

    @ray.method(concurrency_group="write")
    def snapshot(self) -> str | None:
        return str(self._snapshot()) if self._snap is not None else None

    def _snapshot(self) -> Path:
        """npz, then sidecar, then empty the log (runs on the write thread: no add in between)."""
        assert self._snap is not None  # callers check
        with self._lock:  # copy under the lock, write to disk outside it (reads go on meanwhile)
            state = self._buf.state_dict()
            meta: dict[str, Any] = {"num_added": self._buf.num_added, "adds": self._adds,
                                    "keys": sorted(self._keys), "snapshots": self._snapshots + 1}
        self._snap.parent.mkdir(parents=True, exist_ok=True)
        ExperienceBuffer.from_state_dict(state).save(self._snap)
        write_json(self._snap.with_suffix(".json"), meta)
        if self._log is not None:
            self._log.reset()
        self._snap_adds, self._snap_time, self._snapshots = meta["adds"], time.monotonic(), meta["snapshots"]
        return self._snap

    # ---- reads ----------------------------------------------------------------------------------
    @ray.method(concurrency_group="read")
    def sample_sequences(self, batch_size: int, seq_len: int, seed: int, task_id: int | None = None,
                         episode_start: bool = False, trial_start: bool = False) -> dict[str, np.ndarray] | None:
        """``ExperienceBuffer.sample_sequences`` with an RNG seeded per call; None while empty."""
        rng = np.random.default_rng(seed)
        with self._lock:
            if len(self._buf) == 0:
                return None
            return self._buf.sample_sequences(batch_size, seq_len, rng, task_id=task_id,
                                              episode_start=episode_start, trial_start=trial_start)

    @ray.method(concurrency_group="read")
    def state_dict(self) -> dict[str, np.ndarray]:
        with self._lock:
            return self._buf.state_dict()

    @ray.method(concurrency_group="read")
    def durability(self) -> dict:
        """Counters for the driver's check: rows added, restarts (with what each restored), the log."""
        with self._lock:
            return {"size": len(self._buf), "num_added": self._buf.num_added, "adds": self._adds,
                    "snapshots": self._snapshots, "duplicates_skipped": self._duplicates,
                    "restarts": list(self._restarts), "log": self._log.stats() if self._log else None}

    @ray.method(concurrency_group="read")
    def stats(self) -> dict:
        with self._lock:
            return {"size": len(self._buf), "num_added": self._buf.num_added, "adds": self._adds,
                    "snapshot_adds": self._snap_adds, "snapshots": self._snapshots,
                    "duplicates_skipped": self._duplicates, "restored": self._restored,
                    "restarts": list(self._restarts), "log": self._log.stats() if self._log else None,
                    "task_ids": self._buf.task_ids().tolist() if len(self._buf) else [], "pid": os.getpid(),
                    "node_id": ray.get_runtime_context().get_node_id()}


# ---- the driver's side -----------------------------------------------------------------------------
def empty_report() -> dict:
    """The counters :meth:`BufferClient.watch` keeps (``metrics.json``'s ``buffer`` entry).

    Rows are counted since the session started (``rows_collected``: env steps the workers sampled;
    ``rows_stored``: rows the buffer gained; ``rows_lost``: the difference). ``duplicates_skipped`` and
    ``log`` (bytes, appends, seconds in ``BlockLog.append``) count since the actor's last (re)start.
    """
    return {"restarts": 0, "rows_restored_from_snapshot": 0, "rows_restored_from_log": 0,
            "torn_records_dropped": 0, "rows_collected": 0, "rows_stored": 0, "rows_lost": 0,
            "duplicates_skipped": 0, "snapshots": 0, "log": None}


def restart_line(name: str, r: dict, collected: int, stored: int) -> str:
    """The one line logged for a restart: what it restored, and what the buffer misses now."""
    base = {"snapshot": "its snapshot", "checkpoint": "the resumed checkpoint"}.get(r["from"])
    parts = [f"{r['base_rows']:,} rows from {base}"] if base else []
    if "log_rows" in r:
        blocks = r["log_records"]
        parts.append(f"{r['log_rows']:,} rows from its log ({blocks} block{'s' * (blocks != 1)})")
    what = "restored " + (" + ".join(parts) or "nothing (no snapshot directory: buffer empty)")
    what += f" in {r['seconds']:.2f} s"
    if r.get("torn_bytes"):
        what += f", dropped a torn last record ({r['torn_bytes']:,} B: the add in flight, retried)"
    lost = collected - stored
    tail = (f"nothing lost ({stored:,} of {collected:,} rows collected are stored)" if lost <= 0 else
            f"{lost:,} of {collected:,} rows collected are LOST")
    n = f" (restart {r['restart']})" if r.get("restart") else ""
    return f"experience buffer actor {name} restarted{n}: {what}; {tail}"


class BufferClient:
    """The driver's handle: ``save(path)`` (what ``save_checkpoint`` calls), ``stats()``, ``watch()``,
    ``close()``; ``add()`` for blocks written from the driver."""

    def __init__(self, handle, name: str, snapshot_path: Path | None, timeout_s: float):
        self.handle, self.name, self.snapshot_path, self.timeout_s = handle, name, snapshot_path, timeout_s
        self.start_rows = 0  # num_added when the run (or its resumption) started: the checkpoint's rows
        self.report = empty_report()
        self._seen: set[tuple] = set()  # restarts already logged: (pid, time)

    def add(self, block: Mapping[str, np.ndarray], key: str | None = None, retries: int = 3) -> int:
        """``add`` that retries (same key: an add that had landed is skipped) while Ray restarts the actor."""
        for attempt in range(retries + 1):
            try:
                return get(self.handle.add.remote(block, key=key), self.timeout_s, "experience buffer add")
            except ray.exceptions.RayActorError:
                if attempt == retries:
                    raise
                time.sleep(min(2.0, 0.25 * 2**attempt))
        raise ValueError(f"retries must be >= 0, got {retries}")

    def save(self, path: str | os.PathLike) -> Path:
        state = get(self.handle.state_dict.remote(), self.timeout_s, "experience buffer state_dict")
        return ExperienceBuffer.from_state_dict(state).save(path)

    def stats(self) -> dict:
        return get(self.handle.stats.remote(), self.timeout_s, "experience buffer stats")

    def watch(self, rows_collected: int) -> dict:
        """Check the buffer against the rows the run collected; log one line per restart not yet logged
        (and a line when rows go missing without one). Returns (and keeps) the counters."""
        d = get(self.handle.durability.remote(), self.timeout_s, "experience buffer durability")
        stored = d["num_added"] - self.start_rows
        lost_before = self.report["rows_lost"]
        self.report.update(rows_collected=rows_collected, rows_stored=stored,
                           rows_lost=max(0, rows_collected - stored),
                           duplicates_skipped=d["duplicates_skipped"], snapshots=d["snapshots"], log=d["log"])
        new = [r for r in d["restarts"] if (r["pid"], r["time"]) not in self._seen]
        for r in new:
            self._seen.add((r["pid"], r["time"]))
            self._count_restart(r)
            log.warning(restart_line(self.name, r, rows_collected, stored))
        if not new and self.report["rows_lost"] > lost_before:
            log.warning("experience buffer %s: %s of %s rows collected are not stored (adds failed; see the "
                        "rollout workers' warnings)", self.name, f"{self.report['rows_lost']:,}",
                        f"{rows_collected:,}")
        return self.report

    def _count_restart(self, r: dict) -> None:
        self.report["restarts"] += 1
        self.report["rows_restored_from_snapshot"] += r["base_rows"] if r["from"] == "snapshot" else 0
        self.report["rows_restored_from_log"] += r.get("log_rows", 0)
        self.report["torn_records_dropped"] += int(bool(r.get("torn_bytes")))

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
        """Remove the run's snapshot, sidecar, log and restart records."""
        if self.snapshot_path is not None:
            for p in run_files(self.snapshot_path):
                p.unlink(missing_ok=True)


def create_buffer(capacity: int, obs_dim: int, act_dim: int, discrete: bool, run_id: str,
                  rt: RuntimeConfig | None = None, *, snapshot_dir: str | os.PathLike | None,
                  initial_path: str | os.PathLike | None = None) -> BufferClient:
    """Start the run's buffer actor on this (the driver's) node and wait until it is up.

    Pinned (hard node affinity; soft affinity was not honoured in tests): it needs no CPU, its snapshot,
    log and the checkpoint are on this node's disk, and a run whose driver node is gone is over anyway.
    From ``rt`` (default ``RuntimeConfig()``): namespace, call timeout, ``buffer_max_restarts``, the
    snapshot cadence (``buffer_snapshot_every_adds`` / ``_s``) and the per-add block log (``buffer_log``,
    needs ``snapshot_dir``; ``buffer_log_fsync``: fsync every record). ``initial_path``: a saved buffer
    to start from.
    """
    rt = rt if rt is not None else RuntimeConfig()
    snap = Path(snapshot_dir) / f"{run_id}.buffer.npz" if snapshot_dir is not None else None
    name = actor_name(run_id, "buffer")
    BufferClient(None, name, snap, rt.call_timeout_s).remove_snapshot()  # a leftover of an earlier run's id
    handle = ExperienceBufferActor.options(  # type: ignore[attr-defined]  # an ActorClass at runtime
        name=name, namespace=rt.namespace, max_restarts=rt.buffer_max_restarts,
        max_task_retries=rt.buffer_max_restarts,  # reads are idempotent; adds are keyed: retries are safe
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                           soft=False),
    ).remote(capacity, obs_dim, act_dim, discrete, str(snap) if snap else None,
             str(initial_path) if initial_path else None, rt)
    client = BufferClient(handle, name, snap, rt.call_timeout_s)
    client.start_rows = int(client.stats()["num_added"])  # also surfaces constructor errors here
    return client
