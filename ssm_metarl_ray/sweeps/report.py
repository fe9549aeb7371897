"""Sweep outputs (no Ray import): results table, ``results.csv``, ``summary.json``, ``heatmap.png``.

A *row* is one trial: ``trial_id``, ``status``, ``params`` (dotted name -> value), ``metrics`` (its last
``tune.report``), ``error``, ``path``. A *cell* aggregates the trials that share the two heatmap
parameters (e.g. buffer_size x experience_weight; seeds and other parameters are pooled): per mode the
mean post-adaptation return and its standard error over all held-out tasks of those trials, and the
paired per-task difference hybrid - standard with its standard error.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ssm_metarl_ray.sweeps.spec import SweepSpec
from ssm_metarl_ray.utils.atomic import write_json

MODES = ("standard", "hybrid")


def short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _pm(m: dict, key: str, sem_key: str) -> str:
    if key not in m:
        return "-"
    return f"{m[key]:.2f} ± {m.get(sem_key, float('nan')):.2f}"


def sort_rows(spec: SweepSpec, rows: list[dict]) -> list[dict]:
    sign = -1.0 if spec.mode == "max" else 1.0

    def key(r):
        v = r["metrics"].get(spec.metric)
        return (v is None, sign * v if v is not None else 0.0, r["trial_id"])

    return sorted(rows, key=key)


def format_table(spec: SweepSpec, rows: list[dict]) -> str:
    params = list(spec.search)
    head = (["trial", *map(short, params), "iters", spec.metric]
            + [f"{m} post ± sem" for m in spec.eval_modes]
            + (["hybrid-standard ± sem"] if set(MODES) <= set(spec.eval_modes) else []) + ["status"])
    lines = []
    for r in sort_rows(spec, rows):
        m = r["metrics"]
        cells = [r["trial_id"], *(_fmt(r["params"].get(p), 4) for p in params), _fmt(m.get("iteration")),
                 _fmt(m.get(spec.metric))]
        cells += [_pm(m, f"{mode}/post_adapt_return", f"{mode}/post_adapt_sem") for mode in spec.eval_modes]
        if set(MODES) <= set(spec.eval_modes):
            cells.append(_pm(m, "hybrid_minus_standard", "hybrid_minus_standard_sem"))
        cells.append(r["status"] + (f" ({r['num_failures']} retried)" if r.get("num_failures") else ""))
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)] + [fmt.format(*c) for c in lines]
    return "\n".join(out)


PER_MODE = ("pre_adapt_return", "post_adapt_return", "post_adapt_sem", "adapt_gain")
CSV_METRICS = ("iteration", "env_steps", "post_adapt_return", "post_adapt_sem", "pre_adapt_return",
               "adapt_gain", *(f"{m}/{k}" for m in MODES for k in PER_MODE),
               "hybrid_minus_standard", "hybrid_minus_standard_sem", "meta/pre_return", "meta/post_return",
               "restored_from_iteration", "runtime", "placement_group_bundles", "buffer_actor")


def write_csv(path: Path, spec: SweepSpec, rows: list[dict]) -> None:
    params = list(spec.search)
    cols = ["trial_id", "status", "num_failures", *params, *CSV_METRICS, "error", "path"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in sort_rows(spec, rows):
            m = r["metrics"]
            w.writerow([r["trial_id"], r["status"], r.get("num_failures", 0),
                        *(r["params"].get(p) for p in params), *(m.get(k, "") for k in CSV_METRICS),
                        r.get("error") or "", r.get("path") or ""])


def _mean_se(x: list[float]) -> tuple[float, float, int]:
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0, int(a.size)


def cells(spec: SweepSpec, rows: list[dict]) -> list[dict]:
    """Per heatmap cell (x, y): pooled per-task post-adaptation returns of its trials, per mode and paired."""
    if spec.heatmap is None:
        return []
    ya, xa = spec.heatmap  # rows of the heatmap: first parameter; columns: second
    out = []
    for yv in spec.search[ya].values:
        for xv in spec.search[xa].values:
            members = [r for r in rows if r["params"].get(ya) == yv and r["params"].get(xa) == xv
                       and r["status"] == "TERMINATED"]
            cell = {ya: yv, xa: xv, "trials": len(members)}
            per_mode = {}
            for mode in spec.eval_modes:
                vals = [v for r in members for v in r["metrics"].get(f"{mode}/per_task_post", [])]
                per_mode[mode] = vals
                mean, se, cell["tasks"] = _mean_se(vals)
                cell[f"{mode}/post_adapt_return"], cell[f"{mode}/post_adapt_se"] = mean, se
            if set(MODES) <= set(spec.eval_modes):
                d = [h - s for r in members for h, s in zip(r["metrics"].get("hybrid/per_task_post", []),
                                                            r["metrics"].get("standard/per_task_post", []))]
                cell["hybrid_minus_standard"], cell["hybrid_minus_standard_se"], _ = _mean_se(d)
            vals = [r["metrics"][spec.metric] for r in members]
            cell["metric"] = float(np.mean(vals)) if vals else float("nan")
            out.append(cell)
    return out


def plot_heatmap(path: Path, spec: SweepSpec, cell_list: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert spec.heatmap is not None  # write_report checks
    ya, xa = spec.heatmap
    yv, xv = list(spec.search[ya].values), list(spec.search[xa].values)
    panels = [(f"{m}/post_adapt_return", f"{m}/post_adapt_se", f"{m}: post-adaptation return")
              for m in spec.eval_modes]
    if set(MODES) <= set(spec.eval_modes):
        panels.append(("hybrid_minus_standard", "hybrid_minus_standard_se", "hybrid - standard (paired)"))

    def grid(key):
        g = np.full((len(yv), len(xv)), np.nan)
        for c in cell_list:
            g[yv.index(c[ya]), xv.index(c[xa])] = c.get(key, np.nan)
        return g

    returns = np.concatenate([grid(k).ravel() for k, _, t in panels if k != "hybrid_minus_standard"])
    lo, hi = (np.nanmin(returns), np.nanmax(returns)) if np.isfinite(returns).any() else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.6 * len(yv) + 2.4), squeeze=False)
    for ax, (key, se_key, title) in zip(axes[0], panels):
        g, s = grid(key), grid(se_key)
        if key == "hybrid_minus_standard":
            lim = np.nanmax(np.abs(g)) if np.isfinite(g).any() else 1.0
            lim = lim if lim > 0 else 1.0
            im = ax.imshow(g, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        else:
            im = ax.imshow(g, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        for i in range(len(yv)):
            for j in range(len(xv)):
                if np.isfinite(g[i, j]):
                    light = ((g[i, j] - lo) / (hi - lo) > 0.6 if key != "hybrid_minus_standard"
                             else abs(g[i, j]) < 0.6 * lim)
                    ax.text(j, i, f"{g[i, j]:.2f}\n±{s[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if light else "white")
        ax.set_xticks(range(len(xv)), [_fmt(v, 3) for v in xv])
        ax.set_yticks(range(len(yv)), [_fmt(v, 3) for v in yv])
        ax.set_xlabel(short(xa))
        ax.set_ylabel(short(ya))
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    n = max((c["trials"] for c in cell_list), default=0)
    fig.suptitle(f"{spec.name}: mean held-out return after adaptation (± s.e. over tasks, {n} trial(s)/cell)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, spec: SweepSpec, rows: list[dict], extra: dict) -> dict[str, Path]:
    """Write results.csv, summary.json and (with heatmap axes) heatmap.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "summary": out / "summary.json"}
    write_csv(paths["csv"], spec, rows)
    cell_list = cells(spec, rows)
    done = [r for r in rows if r["status"] == "TERMINATED" and spec.metric in r["metrics"]]
    best = sort_rows(spec, done)[0] if done else None
    summary = {
        "name": spec.name, "config": spec.source, "metric": spec.metric, "mode": spec.mode,
        "search": {n: {p.kind: list(p.values)} for n, p in spec.search.items()}, "base": spec.base,
        "eval_modes": list(spec.eval_modes), "resources": spec.resources, "bundles_per_trial": spec.bundles(),
        "best": None if best is None else {"trial_id": best["trial_id"], "params": best["params"],
                                           spec.metric: best["metrics"][spec.metric]},
        "heatmap_axes": list(spec.heatmap) if spec.heatmap else None, "cells": cell_list,
        "trials": [{k: r[k] for k in ("trial_id", "status", "params", "metrics", "error", "num_failures")
                    if k in r} for r in rows],
        **extra,
    }
    write_json(paths["summary"], summary, indent=2, default=_json_default)
    if spec.heatmap is not None and cell_list:
        paths["heatmap"] = out / "heatmap.png"
        plot_heatmap(paths["heatmap"], spec, cell_list)
    return paths


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
