"""Tables and plots for the learning benchmark, from its result files only.

``python benchmarks/learning.py report`` (or this file) reads ``results/learning/<env>/*.json`` and the
published MAML 2017 figure-5 numbers in ``anchors/maml2017_fig5.csv``, and writes, per env:

* ``results/learning/summary.csv``: one row per (run, adaptation mode) with the held-out mean return and
  its standard error over test tasks after 0..3 adaptation steps, env steps and wall-clock;
* ``results/learning/REPORT.md``: the markdown tables quoted in ``benchmarks/README.md``;
* ``results/learning/<env>_curves.png``: learning curves (env steps vs post-adaptation return on each
  meta-iteration's training tasks) and ``<env>_adaptation.png`` (held-out return vs adaptation steps,
  with MAML's published curves).
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ssm_metarl_ray.envs.registry import task_family  # a -rllab family is compared with its base's numbers

HERE = Path(__file__).resolve().parent
# MAML 2017's published numbers: figure 5 (locomotion) and figure 4 (2-D navigation), mean and s.e.m.
# over 40 test tasks per adaptation step
ANCHORS = [HERE / "anchors" / "maml2017_fig5.csv", HERE / "anchors" / "maml2017_fig4.csv"]
ANCHOR_TASK = {"halfcheetah-dir": "HalfCheetahDir (fwd/back)", "halfcheetah-vel": "HalfCheetahVel (goal vel U[0,2])",
               "navigation-2d": "2D navigation (point robot)"}
MAML_STEPS = {"halfcheetah-dir": 3.2e7, "halfcheetah-vel": 7.6e7, "navigation-2d": 8e6}  # to MAML's checkpoints
METHOD_ORDER = {"maml": 0, "multitask": 1, "random": 2, "in-context": 3, "in-context-maml": 4}
MODEL_ORDER = {"ssm": 0, "gru": 1, "lstm": 2, "transformer": 3, "mlp": 4}
TARGET_WINDOW = 10  # iterations in the trailing mean of the time-to-target table
MAML_PER_GOAL = HERE / "results" / "maml2017_per_goal.json"  # benchmarks/maml2017_per_goal.py
DISTANCE_EDGES = (0.2, 0.4)  # navigation-2d goals by distance from the start: near, middle, far
DISTANCE_STEPS = 3  # adaptation steps 0..2 in the distance table
COMPARISONS = "comparisons"  # results/learning/comparisons: paired comparisons of runs (compare_runs.py)


def load_runs(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for f in sorted(root.glob("*/*.json")):
        if f.parent.name == COMPARISONS:  # benchmarks/compare_runs.py's outputs, not runs
            continue
        d = json.loads(f.read_text())
        d["file"] = str(f.relative_to(HERE)) if f.is_relative_to(HERE) else str(f)
        runs[d["env"]].append(d)
    for env in runs:
        runs[env].sort(key=lambda d: (METHOD_ORDER[d["method"]], MODEL_ORDER[d["model"]], d.get("variant", ""),
                                      d["seed"]))
    return runs


def load_anchors(env: str) -> dict[str, list[tuple[float, float]]]:
    """``{method: [(mean, sem) per adaptation step]}`` of MAML 2017's figure 5 for ``env``."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in ANCHORS:
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["task"] == ANCHOR_TASK.get(task_family(env)):
                    out[row["method"]].append((float(row["mean_return"]), float(row["sem"])))
    return dict(out)


def policy_label(d: dict) -> str:
    """``model`` plus the run's variant tag (e.g. ``mlp relu100 clipped``)."""
    return " ".join(x for x in (d["model"], d.get("variant", "")) if x)


def _cell(mean: float, sem: float) -> str:
    return f"{mean:.1f} ± {sem:.1f}"


def summary_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for d in runs:
        for mode, r in d["evaluation"].items():
            rows.append({"env": d["env"], "method": d["method"], "model": d["model"],
                         "variant": d.get("variant", ""), "seed": d["seed"],
                         "mode": mode, **{f"step{s}_mean": round(m, 2) for s, m in enumerate(r["mean"])},
                         **{f"step{s}_sem": round(x, 2) for s, x in enumerate(r["sem"])},
                         "train_env_steps": d["train_env_steps"], "train_wall_s": d["train_wall_s"],
                         "eval_wall_s": d["eval_wall_s"], "file": d["file"]})
    return rows


def seed_aggregates(runs: list[dict]) -> list[tuple[str, str, str, list[float], list[float], int]]:
    """(method, model, mode, mean over seeds, std over seeds, n seeds) where a config has > 1 seed."""
    groups: dict[tuple, list[list[float]]] = defaultdict(list)
    for d in runs:
        for mode, r in d["evaluation"].items():
            groups[(d["method"], policy_label(d), mode)].append(r["mean"])
    return [(*k, np.mean(v, 0).tolist(), np.std(v, 0, ddof=1).tolist(), len(v))
            for k, v in groups.items() if len(v) > 1]


def seed_table(runs: list[dict], steps: int) -> list[str]:
    """Configs with more than one seed: mean over seeds of the per-seed held-out means, ± the std over
    seeds, with the s.e.m. of that mean (std / sqrt(seeds)) in brackets."""
    agg = seed_aggregates(runs)
    if not agg:
        return []
    lines = ["", "Across seeds (mean of the per-seed means ± std over seeds; in brackets the s.e.m. of that mean, "
             "std / √seeds):", "",
             "| method | policy | adaptation | seeds | " + " | ".join(f"{s} steps" for s in range(steps)) + " |",
             "|" + "---|" * (4 + steps)]
    for method, model, mode, mean, std, n in agg:
        cells = [f"{_cell(m, s)} ({s / np.sqrt(n):.1f})" for m, s in zip(mean, std)]
        lines.append(f"| {method} | {model} | {mode} | {n} | " + " | ".join(cells) + " |")
    return lines


def paired(d: dict) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """((mean, sem) of the standard-mode gain, (mean, sem) of hybrid - standard or None without a hybrid
    evaluation), both after the last step."""
    std = np.asarray(d["evaluation"]["standard"]["per_task"])  # (tasks, steps + 1)
    if "hybrid" not in d["evaluation"]:
        hyb = None
    else:
        hyb = np.asarray(d["evaluation"]["hybrid"]["per_task"])

    def ms(x: np.ndarray) -> tuple[float, float]:
        return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0

    return ms(std[:, -1] - std[:, 0]), (None if hyb is None else ms(hyb[:, -1] - std[:, -1]))


def time_to_target(history: list[dict], target: float, window: int = TARGET_WINDOW) -> dict | None:
    """The first iteration whose ``window``-iteration trailing mean of the training trials' last-episode
    return (``meta/post_return``) reaches ``target``: its iteration, env steps and training CPU seconds
    (None: never). A training-task proxy (stochastic policy, the iteration's tasks); the held-out
    evaluation runs at the end only."""
    post = np.array([h["meta/post_return"] for h in history], dtype=float)
    for i in range(window - 1, len(post)):
        if post[i - window + 1:i + 1].mean() >= target:
            h = history[i]
            return {"iteration": int(h["iteration"]), "env_steps": int(h["env_steps"]),
                    "train_cpu_s": float(h["time/train_cpu_s"])}
    return None


def target_table(env: str, runs: list[dict]) -> list[str]:
    """In-context runs: training CPU seconds (and env steps) until the training return first reaches MAML
    2017's one-step return, beside the run's held-out return by the last episode and its total CPU time."""
    anchors = load_anchors(env)
    icl = [d for d in runs if "in-context" in d["evaluation"] and d.get("history")
           and "time/train_cpu_s" in d["history"][0]]
    if "maml" not in anchors or len(anchors["maml"]) < 2 or not icl:
        return []
    target = anchors["maml"][1][0]
    lines = ["", f"In-context runs: time until the {TARGET_WINDOW}-iteration mean of the training trials' last-episode "
             f"return first reaches MAML's one-step return ({target:.1f}); a training-task proxy, CPU seconds "
             "compare only between runs on the same machine (`machine.date` in the result files):", "",
             "| method | policy | seed | reached at iteration | env steps | train CPU s | held-out last episode | "
             "total train CPU s | result written (UTC) |", "|---|---|---|---|---|---|---|---|---|"]
    for d in icl:
        hit = time_to_target(d["history"], target)
        last = _cell(d["evaluation"]["in-context"]["mean"][-1], d["evaluation"]["in-context"]["sem"][-1])
        cells = (f"{hit['iteration']} | {hit['env_steps']:.1e} | {hit['train_cpu_s']:.0f}" if hit
                 else "not reached | | ")
        date = str(d.get("machine", {}).get("date", ""))[:16]
        lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | {cells} | {last} | "
                     f"{d.get('train_cpu_s', 0):.0f} | {date} |")
    return lines


def _steps(runs: list[dict]) -> int:
    """Columns of the tables: the longest evaluation (adaptation steps 0..S; in-context rows put episode
    k+1 of a trial in column k)."""
    return max((len(r["mean"]) for d in runs for r in d["evaluation"].values()), default=4)


def env_table(env: str, runs: list[dict]) -> str:
    anchors = load_anchors(env)
    steps = _steps(runs)
    graded = [d for d in runs if "standard" in d["evaluation"]]  # runs with gradient adaptation
    head = ("| method | policy | seed | adaptation | " + " | ".join(f"{s} steps" for s in range(steps))
            + " | traj/step | env steps | wall-clock (train + eval) |")
    lines = [f"### {env}", "",
             f"Held-out return, mean ± s.e.m. over {runs[0]['config']['num_test_tasks']} test tasks "
             "(MAML rows: published, `anchors/maml2017_fig{4,5}.csv`).", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for method in ("maml", "pretrain", "random"):
        if method in anchors:
            cells = " | ".join(_cell(m, s) for m, s in anchors[method][:steps])
            budget = f"{MAML_STEPS[task_family(env)]:.1e}" if method == "maml" else ""
            traj = 40 if env == "navigation-2d" else 20
            lines.append(f"| MAML 2017 {method} (published) | mlp 100×100 | | TRPO / VPG | {cells} | {traj} | "
                         f"{budget} | |")
    for d in runs:
        for mode, r in d["evaluation"].items():
            cells = " | ".join([_cell(m, s) for m, s in zip(r["mean"], r["sem"])] + [""] * (steps - len(r["mean"])))
            wall = f"{d['train_wall_s'] / 60:.0f} + {d['eval_wall_s'] / 60:.0f} min"
            lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | {mode} | {cells} | "
                         f"{d['config']['adapt']['episodes_per_step']} | {d['train_env_steps']:.1e} | {wall} |")
    if "oracle" in anchors:
        lines.append(f"\nMAML 2017 oracle (goal in the observation): {_cell(*anchors['oracle'][0])}.")
    if any("in-context" in d["evaluation"] for d in runs):
        lines.append("\nIn-context rows: column k is episode k+1 of a trial (no gradient step).")
    lines += target_table(env, runs)
    lines += ["", "Paired over the test tasks (mean ± s.e.m. of per-task differences), after the last step; "
              "training CPU time:", "",
              "| method | policy | seed | standard gain (last - 0 steps) | hybrid - standard | train CPU s |",
              "|---|---|---|---|---|---|"]
    for d in graded:
        gain, diff = paired(d)
        lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | {_cell(*gain)} | "
                     f"{'not evaluated' if diff is None else _cell(*diff)} | "
                     f"{d.get('train_cpu_s', '')} |")
    lines += ["", "Median over the test tasks (standard adaptation; a few diverging tasks move the mean):", "",
              "| method | policy | seed | " + " | ".join(f"{s} steps" for s in range(steps)) + " |",
              "|" + "---|" * (3 + steps)]
    for d in graded:
        med = np.median(np.asarray(d["evaluation"]["standard"]["per_task"]), axis=0)
        cells = " | ".join([f"{m:.1f}" for m in med] + [""] * (steps - len(med)))
        lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | {cells} |")
    lines += direction_table(runs, steps)
    lines += distance_table(runs)
    lines += seed_table(runs, steps)
    return "\n".join(lines)


def direction_table(runs: list[dict], steps: int) -> list[str]:
    """Families whose tasks have a ``direction`` (halfcheetah-dir and its -rllab form): the standard
    adaptation's held-out return per direction (+1 "run forward", -1 "run backward"), with MAML 2017's own
    per-direction split from its figure data (``results/maml2017_per_goal.json``, when present)."""
    rows = [d for d in runs if "standard" in d["evaluation"]
            and "direction" in (d.get("test_task_params") or [{}])[0]]
    if not rows:
        return []
    lines = ["", "Per direction (standard adaptation; mean over the test tasks of each direction, their number in "
             "brackets):", "", "| method | policy | seed | direction | "
             + " | ".join(f"{s} steps" for s in range(steps)) + " |", "|" + "---|" * (4 + steps)]
    maml_file = MAML_PER_GOAL if MAML_PER_GOAL.exists() else None
    if maml_file is not None:
        per_step = json.loads(maml_file.read_text())["halfcheetah-dir"]["maml"]
        n = per_step[0]["forward_goals"]
        for name, key, count in (("forward", "forward_mean", n), ("backward", "backward_mean", 40 - n)):
            cells = " | ".join(f"{r[key]:.1f}" for r in per_step[:steps])
            lines.append(f"| MAML 2017 maml (its figure data) | mlp 100×100 | | {name} ({count}) | {cells} |")
    for d in rows:
        per_task = np.asarray(d["evaluation"]["standard"]["per_task"])  # (tasks, steps + 1)
        direction = np.asarray([p["direction"] for p in d["test_task_params"]])
        for name, sel in (("forward", direction > 0), ("backward", direction < 0)):
            cells = " | ".join(f"{m:.1f}" for m in per_task[sel].mean(axis=0))
            lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | {name} ({int(sel.sum())}) | {cells} |")
    return lines


def distance_cells(goals: np.ndarray, per_task: np.ndarray) -> list[str]:
    """One cell per goal-distance bin: "r0 / r1 / r2 (n)", the bin's mean return after 0..DISTANCE_STEPS-1
    adaptation steps and its number of goals. goals: (tasks, 2); per_task: (tasks, steps + 1)."""
    bins = np.digitize(np.linalg.norm(goals, axis=1), DISTANCE_EDGES)  # (tasks,) in 0..len(EDGES)
    cells = []
    for b in range(len(DISTANCE_EDGES) + 1):
        sel = per_task[bins == b, :DISTANCE_STEPS]
        means = " / ".join(f"{m:.1f}" for m in sel.mean(axis=0)) if len(sel) else "-"
        cells.append(f"{means} ({len(sel)})")
    return cells


def distance_table(runs: list[dict]) -> list[str]:
    """navigation-2d (tasks with ``goal_x``/``goal_y``): the standard adaptation's held-out return by the
    goal's distance from the start, beside MAML 2017's own goals and returns (its figure data,
    ``results/maml2017_per_goal.json``, when present): where the returns after 1 and 2 steps are lost."""
    rows = [d for d in runs if "standard" in d["evaluation"]
            and "goal_x" in (d.get("test_task_params") or [{}])[0]]
    if not rows:
        return []
    e0, e1 = DISTANCE_EDGES
    lines = ["", "By goal distance from the start (standard adaptation; mean return after 0 / 1 / 2 steps, the "
             "number of goals in brackets):", "",
             f"| method | policy | seed | near (< {e0}) | middle ({e0}-{e1}) | far (>= {e1}) |",
             "|---|---|---|---|---|---|"]
    if MAML_PER_GOAL.exists():
        data = json.loads(MAML_PER_GOAL.read_text())
        goals = np.asarray(data["test_goals"]["navigation-2d"])
        per_task = np.asarray([r["returns"] for r in data["navigation-2d"]["maml"]]).T  # (goals, steps + 1)
        lines.append("| MAML 2017 maml (its figure data) | mlp 100×100 | | "
                     + " | ".join(distance_cells(goals, per_task)) + " |")
    for d in rows:
        goals = np.asarray([[p["goal_x"], p["goal_y"]] for p in d["test_task_params"]])
        per_task = np.asarray(d["evaluation"]["standard"]["per_task"])
        lines.append(f"| {d['method']} | {policy_label(d)} | {d['seed']} | "
                     + " | ".join(distance_cells(goals, per_task)) + " |")
    return lines


def plot_env(env: str, runs: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for d in runs:
        if not d["history"]:
            continue
        x = [h["env_steps"] for h in d["history"]]
        w = min(3, len(x))  # moving mean over w iterations
        y = np.convolve([h["meta/post_return"] for h in d["history"]], np.ones(w) / w, mode="valid")
        ax.plot(x[w - 1:], y, color=plt.get_cmap("tab10").colors[runs.index(d) % 10],
                label=f"{d['method']}-{policy_label(d)}-s{d['seed']}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("post-adaptation return, training tasks\n(3-iteration moving mean)")
    ax.set_title(f"{env}: meta-training curves", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    curves = out / f"{env}_curves.png"
    fig.savefig(curves, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, vals in load_anchors(env).items():
        if method != "oracle":
            m, s = np.array(vals).T
            ax.errorbar(range(len(m)), m, yerr=s, ls="--", marker="s", capsize=2, label=f"MAML 2017 {method}")
    colors = plt.get_cmap("tab10").colors
    for i, d in enumerate(runs):  # one colour per run: standard solid, hybrid dotted
        for mode, r in d["evaluation"].items():
            ax.errorbar(range(len(r["mean"])), r["mean"], yerr=r["sem"], marker="o", ms=3, capsize=2,
                        color=colors[i % len(colors)], ls="-" if mode == "standard" else ":",
                        label=f"{d['method']}-{policy_label(d)}-s{d['seed']} {mode}")
    ax.set_xticks(range(_steps(runs)))
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"held-out return ({runs[0]['config']['num_test_tasks']} tasks)")
    ax.set_title(f"{env}: return vs adaptation steps", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    adapt = out / f"{env}_adaptation.png"
    fig.savefig(adapt, dpi=110)
    plt.close(fig)
    return [curves, adapt]


def report(root: Path) -> dict:
    runs = load_runs(root)
    if not runs:
        print(f"no result files under {root}", file=sys.stderr)
        return {}
    rows = [r for env in sorted(runs) for r in summary_rows(runs[env])]
    with open(root / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    text = ["# Learning benchmark results (generated by `python benchmarks/learning.py report`)", ""]
    plots = []
    for env in sorted(runs):
        text += [env_table(env, runs[env]), ""]
        plots += plot_env(env, runs[env], root)
    (root / "REPORT.md").write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {root / 'summary.csv'}, {root / 'REPORT.md'}, " + ", ".join(map(str, plots)), file=sys.stderr)
    return {"rows": rows, "plots": [str(p) for p in plots]}


if __name__ == "__main__":
    report(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "learning")
