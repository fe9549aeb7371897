"""The packed rollout step of the SSM against the LSTM's and GRU's, over several fresh processes.

``benchmarks/model_speed.py`` times every model's step in ONE process (models interleaved), so its ratio
carries that process's luck: at batch 1, where a step is ~17 dispatches of ~2 us, the same code measured
0.95x and 1.01x (SSM against LSTM) in two runs minutes apart, on an idle box. This script runs the same step
benchmark (``model_speed.bench_step``: 15 rounds of 100 steps per model, interleaved, one thread,
``done_t=None``) in ``--processes`` fresh processes, one after the other, and reports per process the
ratio of CPU-time minima (baseline / SSM, >1: the SSM is faster) of the packed steps (``<model>/packed``,
what the rollout workers run), then their median and range, at batch 1, 4, 16, 32 and 64; and the same ratio
of the SSM's packed step without its fused small-batch layers to the one with them where B <=
``packed_step.SMALL_BATCH_MAX`` (``unfused_over_fused``: > 1 where the fused layers pay; 1 above it, where
both rows run the same code).

    python benchmarks/step_processes.py              # 7 processes, ~3 minutes on 2 cores
    python benchmarks/step_processes.py --smoke      # 2 tiny processes, writes nothing

Writes ``benchmarks/results/step_processes.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402

KINDS = ["ssm", "lstm", "gru"]
BATCHES = [1, 4, 16, 32, 64]
BASELINES = ["lstm", "gru"]
PACKED = "/packed"
UNFUSED = "-unfused"  # model_speed's SSM row without the fused small-batch layers (small_batch_max=0)
UNFUSED_RATIO = "unfused_over_fused"  # ssm/packed-unfused / ssm/packed: > 1 where the fused layers pay
MARK = "STEP_JSON "


def child(smoke: bool) -> None:
    """One process: ``model_speed.bench_step`` for ``KINDS``; prints its rows as one JSON line."""
    import model_speed

    args = model_speed.parse(["--smoke"] if smoke else ["--step-batches", *map(str, BATCHES)])
    print(MARK + json.dumps(model_speed.bench_step(args, KINDS)))


def ratios(rows: list[dict]) -> dict:
    """bench_step rows of one process -> {batch: {baseline: CPU-min ratio baseline/ssm, packed steps}}."""
    out = {}
    for row in rows:
        cpu = {k: min(v) for k, v in row["cpu_us"].items()}
        out[str(row["B"])] = {"ssm_us": cpu["ssm" + PACKED], "ssm_unfused_us": cpu["ssm" + PACKED + UNFUSED],
                              **{b + "_us": cpu[b + PACKED] for b in BASELINES},
                              **{b: cpu[b + PACKED] / cpu["ssm" + PACKED] for b in BASELINES},
                              UNFUSED_RATIO: cpu["ssm" + PACKED + UNFUSED] / cpu["ssm" + PACKED]}
    return out


def main(argv=None) -> dict:
    p = _common.parser(__doc__.split("\n")[0])
    p.add_argument("--processes", type=int, default=7)
    p.add_argument("--child", action="store_true", help="internal: run one process's measurement")
    args = p.parse_args(argv)
    if args.child:
        child(args.smoke)
        return {}
    n = 2 if args.smoke else args.processes
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    runs = []
    for i in range(n):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child"] + (["--smoke"] if args.smoke else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
        if proc.returncode != 0 or not line:
            raise SystemExit(f"step process {i} failed: {proc.stderr[-2000:]}")
        runs.append(ratios(json.loads(line[-1][len(MARK):])))
        print(f"process {i + 1}/{n}: " + "; ".join(
            f"B={b}: ssm {r['ssm_us']:.1f} us, " + ", ".join(f"{k} {r[k]:.3f}x" for k in BASELINES + [UNFUSED_RATIO])
            for b, r in runs[-1].items()), file=sys.stderr, flush=True)
    summary = {}
    for b in runs[0]:
        summary[b] = {k: {"median": statistics.median(r[b][k] for r in runs), "min": min(r[b][k] for r in runs),
                          "max": max(r[b][k] for r in runs),
                          "processes_above_1": sum(r[b][k] > 1 for r in runs)} for k in BASELINES + [UNFUSED_RATIO]}
    from ssm_metarl_ray.models.packed_step import SMALL_BATCH_MAX

    data = {"setup": {"kinds": KINDS, "processes": n, "batches": [int(b) for b in runs[0]],
                      "small_batch_max": SMALL_BATCH_MAX, "path": "PackedStep (<model>/packed), done_t=None, 1 thread",
                      "ratio": "baseline CPU-min us / SSM CPU-min us within one process (>1: SSM faster); "
                               "unfused_over_fused: ssm/packed-unfused / ssm/packed",
                      "per_process": "model_speed.bench_step defaults: 15 rounds x 100 steps, models interleaved"},
            "per_process": runs, "summary": summary}
    command = "python benchmarks/step_processes.py" + (" --smoke" if args.smoke else "")
    _common.write("step_processes", args, command, data)
    return data


if __name__ == "__main__":
    main()
