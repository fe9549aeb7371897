"""Paired hybrid-minus-standard table of a hybrid sweep's ``summary.json`` (written by ``ssm-metarl tune``).

    python benchmarks/hybrid_sweep/table.py benchmarks/hybrid_sweep/summary.json

Per (buffer_size, experience_weight) cell: the hybrid post-adaptation return (mean ± s.e. over held-out
tasks pooled across seeds), the paired difference hybrid - standard (same seed, same task), its standard
error treating the task pairs as independent, the standard error of the per-seed mean differences, and
each seed's mean difference. Also the pre- and post-adaptation standard returns per seed.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def cell_rows(summary: dict) -> list[dict]:
    """One dict per grid cell, sorted by buffer size then weight."""
    groups: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for t in summary["trials"]:
        p, m = t["params"], t["metrics"]
        key = (p["adapt.buffer_size"], p["adapt.experience_weight"])
        groups[key][p["seed"]] = (np.asarray(m["hybrid/per_task_post"]), np.asarray(m["standard/per_task_post"]))
    rows = []
    for (size, weight), seeds in sorted(groups.items()):
        hyb = np.concatenate([h for h, _ in seeds.values()])
        diff = np.concatenate([h - s for h, s in seeds.values()])
        per_seed = {seed: float((h - s).mean()) for seed, (h, s) in sorted(seeds.items())}
        rows.append({"buffer_size": size, "experience_weight": weight, "hybrid": float(hyb.mean()),
                     "hybrid_se": _se(hyb), "diff": float(diff.mean()), "diff_se_tasks": _se(diff),
                     "diff_se_seeds": _se(np.array(list(per_seed.values()))), "per_seed": per_seed,
                     "pairs": len(diff)})
    return rows


def markdown(summary: dict) -> str:
    out = ["| buffer_size | experience_weight | hybrid post-adapt return | hybrid - standard | s.e. (tasks) | "
           "s.e. (seeds) | per-seed difference |", "|---|---|---|---|---|---|---|"]
    for r in cell_rows(summary):
        seeds = ", ".join(f"{v:+.2f}" for v in r["per_seed"].values())
        out.append(f"| {r['buffer_size']:,} | {r['experience_weight']} | {r['hybrid']:.2f} ± {r['hybrid_se']:.2f} | "
                   f"{r['diff']:+.2f} | {r['diff_se_tasks']:.2f} | {r['diff_se_seeds']:.2f} | {seeds} |")
    out += ["", "| seed | standard pre-adapt | standard post-adapt |", "|---|---|---|"]
    seen = {}
    for t in summary["trials"]:
        seen.setdefault(t["params"]["seed"], t["metrics"])
    for seed, m in sorted(seen.items()):
        out.append(f"| {seed} | {m['standard/pre_adapt_return']:.2f} | {m['standard/post_adapt_return']:.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary", help="summary.json of a hybrid sweep")
    a = ap.parse_args()
    with open(a.summary) as f:
        print(markdown(json.load(f)))


if __name__ == "__main__":
    main()
