"""Cost of the buffer actor's per-add block log: time per add without the log, with it (flushed), and
with fsync; and how long a restart takes to replay a full log.

    python benchmarks/buffer_durability.py          # -> benchmarks/results/buffer_durability.json
    python benchmarks/buffer_durability.py --smoke  # seconds; writes nothing

Adds go from the driver, ``ray.get(add.remote(block))`` one at a time, as a rollout worker's add
(blocks of a small run: navigation-2d, 1,200 rows = 2 tasks x (pre + post) x 3 episodes x 100 steps;
and halfcheetah-sized 4,000-row blocks). Snapshots are off in every variant (only the log differs); the
variants alternate in rounds and the result is the median over rounds, so a busy neighbour on the
shared machine hits all of them alike. ``log_ms_per_append`` is the time the actor spends in
``BlockLog.append`` (encode + CRC + write + flush [+ fsync]) per add.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, start_ray, write  # noqa: E402

VARIANTS = {"no_log": {"buffer_log": False}, "log": {"buffer_log": True},
            "log_fsync": {"buffer_log": True, "buffer_log_fsync": True}}
SHAPES = {"navigation2d_1200_rows": (1_200, 2, 2, 100), "halfcheetah_4000_rows": (4_000, 17, 6, 200)}


def make_block(rows: int, obs: int, act: int, ep_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    step = np.arange(rows) % ep_len
    return {"obs": rng.standard_normal((rows, obs), dtype=np.float32),
            "actions": rng.uniform(-1, 1, (rows, act)).astype(np.float32),
            "rewards": rng.standard_normal(rows, dtype=np.float32), "dones": step == 0,
            "logp": rng.standard_normal(rows, dtype=np.float32),
            "advantages": rng.standard_normal(rows, dtype=np.float32),
            "task_id": np.zeros(rows, np.int64), "episode_id": np.arange(rows) // ep_len,
            "step": step.astype(np.int32)}


def time_adds(buf, block: dict, count: int) -> float:
    """Seconds per add, ``count`` sequential adds from the driver."""
    import ray

    t0 = time.perf_counter()
    for _ in range(count):
        ray.get(buf.handle.add.remote(block))
    return (time.perf_counter() - t0) / count


def measure_shape(name: str, shape: tuple, rounds: int, adds: int, snap_dir: Path) -> dict:
    """Median ms per add of each variant over alternating rounds, and the actor's time in the log."""
    from ssm_metarl_ray.runtime.buffer import create_buffer
    from ssm_metarl_ray.runtime.config import RuntimeConfig

    rows, obs, act, ep_len = shape
    block = make_block(rows, obs, act, ep_len)
    capacity = rows * (rounds * adds + 2)
    bufs = {v: create_buffer(capacity, obs, act, False, f"bench-dur-{name}-{v}",
                             RuntimeConfig(buffer_snapshot_every_adds=10**9, buffer_snapshot_every_s=1e9, **kw),
                             snapshot_dir=snap_dir)
            for v, kw in VARIANTS.items()}
    try:
        per_round = {v: [] for v in bufs}
        for b in bufs.values():
            time_adds(b, block, 1)  # warm-up
        for r in range(rounds):
            order = list(bufs)[r % len(bufs):] + list(bufs)[:r % len(bufs)]
            for v in order:
                per_round[v].append(1e3 * time_adds(bufs[v], block, adds))
        out = {}
        for v, b in bufs.items():
            logst = b.stats()["log"]
            out[v] = {"ms_per_add_median": float(np.median(per_round[v])),
                      "ms_per_add_rounds": [round(x, 3) for x in per_round[v]],
                      "log_ms_per_append": 1e3 * logst["seconds"] / logst["appends"] if logst else None,
                      "log_bytes_per_append": logst["bytes_written"] // logst["appends"] if logst else None}
        return {"rows": rows, "bytes_per_block": sum(a.nbytes for a in block.values()), **out}
    finally:
        for b in bufs.values():
            b.close()


def measure_restart(snap_dir: Path, blocks: int) -> dict:
    """Kill an actor whose log holds ``blocks`` 4,000-row blocks; time until it answers again."""
    import ray

    from ssm_metarl_ray.runtime.buffer import create_buffer
    from ssm_metarl_ray.runtime.config import RuntimeConfig

    rows, obs, act, ep_len = SHAPES["halfcheetah_4000_rows"]
    buf = create_buffer(rows * (blocks + 1), obs, act, False, "bench-dur-restart",
                        RuntimeConfig(buffer_snapshot_every_adds=10**9, buffer_snapshot_every_s=1e9),
                        snapshot_dir=snap_dir)
    try:
        for i in range(blocks):
            buf.add(make_block(rows, obs, act, ep_len, seed=i), key=f"0:{i}")
        pid = buf.stats()["pid"]
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        st = ray.get(buf.handle.stats.remote(), timeout=120)
        wall = time.perf_counter() - t0
        r = st["restored"]
        return {"log_blocks": blocks, "log_rows": r["log_rows"],
                "log_mb": round(st["log"]["bytes"] / 2**20, 1),
                "replay_s": round(r["seconds"], 3), "kill_to_answer_s": round(wall, 2),
                "rows_after": st["size"], "rows_before": rows * blocks}
    finally:
        buf.close()


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rounds, adds, restart_blocks = (2, 3, 3) if args.smoke else (7, 40, 50)
    owns = start_ray(args)
    snap_dir = Path(tempfile.mkdtemp(prefix="bench_buffer_durability_"))
    out: dict = {"setup": {"rounds": rounds, "adds_per_round": adds, "snapshots": "off (log cost only)",
                           "snapshot_dir": "a temp dir on the local disk"}, "results": {}}
    try:
        for name, shape in SHAPES.items():
            out["results"][name] = measure_shape(name, shape, rounds, adds, snap_dir)
        out["restart"] = measure_restart(snap_dir, restart_blocks)
    finally:
        if owns:
            import ray

            ray.shutdown()
        snap_dir.rmdir() if snap_dir.exists() and not any(snap_dir.iterdir()) else None
    out["overhead"] = {name: _overhead(r) for name, r in out["results"].items()}
    write("buffer_durability", args, "python benchmarks/buffer_durability.py", out)
    return out


def _overhead(r: dict) -> dict:
    base = r["no_log"]["ms_per_add_median"]
    return {"ms_per_add_no_log": round(base, 3),
            "log_ms_per_add": round(r["log"]["ms_per_add_median"] - base, 3),
            "log_pct": round(100 * (r["log"]["ms_per_add_median"] / base - 1), 1),
            "log_fsync_ms_per_add": round(r["log_fsync"]["ms_per_add_median"] - base, 3),
            "log_ms_per_append_in_actor": round(r["log"]["log_ms_per_append"], 3),
            "log_fsync_ms_per_append_in_actor": round(r["log_fsync"]["log_ms_per_append"], 3)}


if __name__ == "__main__":
    main()
