"""ExperienceBuffer actor throughput: block adds (transitions/s; target >= 200k/s) and sequence-batch
sampling rate/latency with concurrent readers and writers.

    python benchmarks/buffer_throughput.py            # -> benchmarks/results/buffer_throughput.json
    python benchmarks/buffer_throughput.py --smoke    # seconds; writes nothing

Rows are halfcheetah-sized (17-d obs, 6-d action, 200-step episodes). Adds go through ``add.remote(block)``
exactly as a rollout worker sends them (the block is serialised into the object store each call).
Readers call ``sample_sequences(16, 200, seed, episode_start=True)`` - one hybrid-adaptation replay batch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, start_ray, write  # noqa: E402

OBS, ACT, T = 17, 6, 200


def make_block(rows: int, first_episode: int = 0, task: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    step = np.arange(rows) % T
    return {"obs": rng.standard_normal((rows, OBS), dtype=np.float32),
            "actions": rng.uniform(-1, 1, (rows, ACT)).astype(np.float32),
            "rewards": rng.standard_normal(rows, dtype=np.float32), "dones": step == 0,
            "logp": rng.standard_normal(rows, dtype=np.float32),
            "advantages": rng.standard_normal(rows, dtype=np.float32),
            "task_id": np.full(rows, task, np.int64), "episode_id": first_episode + np.arange(rows) // T,
            "step": step.astype(np.int32)}


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import ray

    from ssm_metarl_ray.runtime.buffer import create_buffer

    @ray.remote(num_cpus=0)
    class Writer:
        def __init__(self, buffer, rows: int):
            self.buffer, self.block = buffer, make_block(rows)

        def run(self, seconds: float) -> int:
            n, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                ray.get(self.buffer.add.remote(self.block))
                n += len(self.block["rewards"])
            return n

        def adds(self, count: int) -> float:
            t0 = time.perf_counter()
            for _ in range(count):
                ray.get(self.buffer.add.remote(self.block))
            return time.perf_counter() - t0

    @ray.remote(num_cpus=0)
    class Reader:
        def __init__(self, buffer):
            self.buffer = buffer

        def run(self, seconds: float, batch: int, seq_len: int) -> list[float]:
            lat, end, i = [], time.monotonic() + seconds, 0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                ray.get(self.buffer.sample_sequences.remote(batch, seq_len, i, episode_start=True))
                lat.append(time.perf_counter() - t0)
                i += 1
            return lat

    smoke = args.smoke
    capacity = 20_000 if smoke else 1_000_000
    block_sizes = [1_000, 4_000] if smoke else [1_000, 4_000, 20_000]
    adds_per_size = 3 if smoke else 40
    window = 1.0 if smoke else 8.0  # seconds per concurrency measurement
    owns = start_ray(args)
    out: dict = {"setup": {"capacity": capacity, "obs_dim": OBS, "act_dim": ACT, "episode_len": T,
                           "bytes_per_transition": sum(v.itemsize * (v.size // len(v))
                                                       for v in make_block(10).values()),
                           "replay_batch": [16, T], "window_s": window}}
    try:
        # ---- adds from the driver, sequential, per block size ------------------------------------------
        buf = create_buffer(capacity, OBS, ACT, False, "bench-buffer", snapshot_dir=None)
        adds = {}
        for rows in block_sizes:
            block = make_block(rows)
            ray.get(buf.handle.add.remote(block))  # warm-up
            t0 = time.perf_counter()
            for _ in range(adds_per_size):
                ray.get(buf.handle.add.remote(block))
            dt = time.perf_counter() - t0
            adds[str(rows)] = {"transitions_per_s": rows * adds_per_size / dt,
                               "ms_per_add": 1e3 * dt / adds_per_size}
        out["add_from_driver"] = adds
        # ---- the same with snapshots on (defaults: every 50 adds or 60 s) -------------------------------
        snap_dir = Path(__file__).resolve().parent / "results" / ".snapshots"
        sbuf = create_buffer(capacity, OBS, ACT, False, "bench-buffer-snap", snapshot_dir=snap_dir)
        block = make_block(4_000)
        t0 = time.perf_counter()
        n_snap_adds = 10 if smoke else 100
        for _ in range(n_snap_adds):
            ray.get(sbuf.handle.add.remote(block))
        dt = time.perf_counter() - t0
        st = sbuf.stats()
        out["add_with_snapshots"] = {"block_rows": 4_000, "adds": n_snap_adds, "snapshots": st["snapshots"],
                                     "transitions_per_s": 4_000 * n_snap_adds / dt}
        sbuf.close()
        snap_dir.rmdir() if snap_dir.exists() and not any(snap_dir.iterdir()) else None
        # ---- concurrent writers (actors, as rollout workers write) -----------------------------------------
        conc = {}
        for w in (1, 2) if smoke else (1, 2, 4):
            writers = [Writer.remote(buf.handle, 4_000) for _ in range(w)]
            ray.get([x.adds.remote(1) for x in writers])  # warm-up
            t0 = time.perf_counter()
            n = sum(ray.get([x.run.remote(window) for x in writers]))
            conc[f"{w}_writers"] = {"transitions_per_s": n / (time.perf_counter() - t0)}
            for x in writers:
                ray.kill(x)
        out["add_concurrent_writers"] = conc
        # ---- sampling under concurrent readers, with and without a writer --------------------------------
        sampling = {}
        for readers in (1,) if smoke else (1, 4):
            for writing in (False, True):
                rs = [Reader.remote(buf.handle) for _ in range(readers)]
                ray.get([r.run.remote(0.2, 16, T) for r in rs])  # warm-up
                writer = Writer.remote(buf.handle, 4_000) if writing else None
                wref = writer.run.remote(window) if writer else None
                lat = ray.get([r.run.remote(window, 16, T) for r in rs])
                written = ray.get(wref) if wref else 0
                all_lat = np.concatenate([np.asarray(x) for x in lat]) * 1e3
                sampling[f"{readers}_readers{'_1_writer' if writing else ''}"] = {
                    "batches_per_s": len(all_lat) / window, "sequences_per_s": 16 * len(all_lat) / window,
                    "latency_ms_p50": float(np.percentile(all_lat, 50)),
                    "latency_ms_p95": float(np.percentile(all_lat, 95)),
                    "writer_transitions_per_s": written / window if writing else None}
                for a in [*rs, *([writer] if writer else [])]:
                    ray.kill(a)
        out["sample_sequences"] = sampling
        buf.close()
    finally:
        if owns:
            ray.shutdown()
    best = max(v["transitions_per_s"] for v in out["add_from_driver"].values())
    out["summary"] = {"best_add_transitions_per_s": best, "target_transitions_per_s": 200_000,
                      "meets_target": best >= 200_000}
    write("buffer_throughput", args, "python benchmarks/buffer_throughput.py", out)
    return out


if __name__ == "__main__":
    main()
