"""Compare a variant run with a baseline run of the same seed: the held-out return difference per adaptation
step, paired over the same test goals (both evaluations finished), and the training tasks' post-adaptation
return (``meta/post_return``) averaged over windows of env steps, from a result file or, for a run stopped
early, its checkpoint's ``state.json``.

    python benchmarks/compare_runs.py --out NAME BASELINE VARIANT [BASELINE VARIANT ...]

writes ``results/learning/comparisons/NAME.json``: ``{"pairs": [one entry per pair], "pooled_paired_held_out":
(mean, s.e.m.) per step over the test goals of every pair evaluated}`` (files made before 2026-12-06's second
session are the bare list of pairs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "learning" / "comparisons"


def load(path: Path) -> dict:
    """A result file, or a checkpoint directory (its ``state.json``: history only)."""
    return json.loads((path / "state.json" if path.is_dir() else path).read_text())


def per_goal_differences(base: dict, variant: dict) -> np.ndarray | None:
    """variant - baseline held-out return per test goal and adaptation step, (tasks, steps + 1); None without
    both standard evaluations."""
    if "evaluation" not in base or "evaluation" not in variant:
        return None
    a = np.asarray(base["evaluation"]["standard"]["per_task"])  # (tasks, steps + 1)
    b = np.asarray(variant["evaluation"]["standard"]["per_task"])
    return b - a


def mean_sem(d: np.ndarray) -> list[tuple[float, float]]:
    """(mean, s.e.m.) over the rows of ``d`` (tasks, steps + 1), per step, rounded to 0.1."""
    return [(round(float(d[:, s].mean()), 1), round(float(d[:, s].std(ddof=1) / np.sqrt(len(d))), 1))
            for s in range(d.shape[1])]


def windows(history: list[dict], width: float, end: float) -> list[float | None]:
    """Mean ``meta/post_return`` of the iterations whose env-step count lies in (k * width, (k + 1) * width]."""
    out: list[float | None] = []
    for k in range(int(np.ceil(end / width))):
        vals = [h["meta/post_return"] for h in history if k * width < h["env_steps"] <= (k + 1) * width]
        out.append(round(float(np.mean(vals)), 1) if vals else None)
    return out


def compare(base_path: Path, variant_path: Path, width: float, root: Path) -> tuple[dict, np.ndarray | None]:
    """The pair's entry of the output file, and its per-goal differences (None if either run is unevaluated)."""
    base, variant = load(root / base_path), load(root / variant_path)
    end = max(h["env_steps"] for h in variant["history"])
    d = per_goal_differences(base, variant)
    return {"baseline": str(base_path), "variant": str(variant_path), "window_env_steps": width,
            "paired_held_out": None if d is None else mean_sem(d),
            "train_post_return_windows": {"baseline": windows(base["history"], width, end),
                                          "variant": windows(variant["history"], width, end)}}, d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="result name (results/learning/comparisons/NAME.json)")
    p.add_argument("--window", type=float, default=3.2e6, help="env steps per window (default 3.2e6)")
    p.add_argument("runs", nargs="+", type=Path, help="pairs: baseline variant [baseline variant ...]")
    a = p.parse_args()
    if len(a.runs) % 2:
        raise SystemExit(f"compare_runs.py: runs must come in pairs (baseline variant), got {len(a.runs)} paths")
    root = Path(__file__).resolve().parent.parent
    rel = [r.resolve().relative_to(root) if r.resolve().is_relative_to(root) else r.resolve() for r in a.runs]
    pairs = [compare(rel[i], rel[i + 1], a.window, root) for i in range(0, len(rel), 2)]
    data = [entry for entry, _ in pairs]
    diffs = [d for _, d in pairs if d is not None]
    pooled = mean_sem(np.concatenate(diffs)) if diffs else None  # every evaluated pair's goals together
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{a.out}.json"
    path.write_text(json.dumps({"pairs": data, "pooled_paired_held_out": pooled}, indent=1) + "\n")
    for d in data:
        print(d["variant"], d["paired_held_out"], d["train_post_return_windows"], sep="\n  ")
    print(f"pooled over {sum(len(d) for d in diffs)} goals: {pooled}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
