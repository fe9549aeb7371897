"""The README's main job, ``ssm-metarl train`` with its defaults (local Ray, default task family), timed end
to end: wall time of the command, and per meta-iteration the sampling time against the learner's update
time (``time/sample_s``, ``time/update_s`` in the run's ``metrics.json``; ``time/experience_s``, storing the
batches in the buffer and checking it, is apart from both). The same command with ``--no-worker-gradients``
runs right after it as the baseline (the learner alone computes every task's meta-gradient). Then, for the
learner-vs-sampling ratio only, the same command with cheaper meta-updates than the default's (second-order
meta-gradient, 2 clipped-surrogate steps): ``--first-order`` and ``--outer-steps 1`` (``VARIANTS``), each with
its last iteration's post-adaptation return (30 iterations: a smoke signal, not a learning result).

    python benchmarks/main_job.py            # -> benchmarks/results/main_job.json
    python benchmarks/main_job.py --smoke    # 2 iterations; writes nothing

The command runs in a fresh process as a user runs it (``python -m ssm_metarl_ray train --output-dir ...``),
so the wall time includes Python start-up, Ray start-up and shutdown, training and the held-out evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write  # noqa: E402


def run_job(flags: list[str]) -> tuple[dict, dict]:
    """``ssm-metarl train <flags>`` in a fresh process -> (timings, the run's config)."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ssm_metarl_ray", "train", "--output-dir", tmp, *flags]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"ssm-metarl train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    hist = metrics["history"]
    sample = [h["time/sample_s"] for h in hist]
    update = [h["time/update_s"] for h in hist]
    experience = [h.get("time/experience_s", 0.0) for h in hist]
    return {"command": " ".join(["ssm-metarl train", *flags]), "wall_s": wall, "iterations": len(hist),
            "train_env_steps": hist[-1].get("env_steps"),
            "sample_s_per_iteration_median": float(np.median(sample)),
            "update_s_per_iteration_median": float(np.median(update)),
            "update_over_sample_median": float(np.median(np.array(update) / np.array(sample))),
            "experience_s_per_iteration_median": float(np.median(experience)),
            "sample_s_total": float(np.sum(sample)), "update_s_total": float(np.sum(update)),
            "experience_s_total": float(np.sum(experience)),
            "post_return_last": hist[-1].get("meta/post_return"), "evaluation": metrics.get("evaluation"),
            "per_iteration": [{"sample_s": s, "update_s": u, "experience_s": e}
                              for s, u, e in zip(sample, update, experience)]}, metrics["config"]


# cheaper meta-updates than the default's, to show what "update <= sampling" takes on this box
VARIANTS = (("first_order", ["--first-order"]), ("one_outer_step", ["--outer-steps", "1"]))


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    extra = ["--num_epochs", "2"] if args.smoke else []
    results, cfg = run_job(extra)
    baseline, _ = run_job([*extra, "--no-worker-gradients"])
    variants = {name: _ratio_only(run_job([*extra, *flags])[0]) for name, flags in VARIANTS}
    data = {"setup": {"command": "ssm-metarl train" + (" --num_epochs 2" if args.smoke else ""),
                      "env": cfg["env"], "model": cfg["model"]["kind"],
                      "meta_batch_size": cfg["meta"]["meta_batch_size"], "iterations": results["iterations"],
                      "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),  # None: torch's default, as a user's shell
                      "note": "wall = the whole command in a fresh process (start-up, Ray, training, evaluation); "
                              "baseline: the same command with --no-worker-gradients (the learner computes every "
                              "task's meta-gradient itself), run right after it"},
            "results": results, "baseline_no_worker_gradients": baseline,
            "update_speedup_over_baseline": baseline["update_s_per_iteration_median"]
            / results["update_s_per_iteration_median"],
            "variants": variants}
    write("main_job", args, "python benchmarks/main_job.py", data)
    return data


def _ratio_only(r: dict) -> dict:
    """A variant's result without the per-iteration list."""
    return {k: v for k, v in r.items() if k != "per_iteration"}


if __name__ == "__main__":
    main()
