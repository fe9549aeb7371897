"""The learning report's time-to-target table (benchmarks/learning_report.py): pure functions over result
dicts, no runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("learning_report_t", BENCH / "learning_report.py")
lr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lr)


def _history(post: list[float]) -> list[dict]:
    return [{"iteration": i, "env_steps": 1000 * (i + 1), "time/train_cpu_s": 2.0 * (i + 1),
             "meta/post_return": r} for i, r in enumerate(post)]


def test_time_to_target_uses_the_trailing_mean():
    # one lucky iteration (index 2) must not count; the 3-iteration mean first reaches 10 at index 6
    post = [0.0, 0.0, 21.0, 0.0, 0.0, 10.0, 20.0, 0.0]
    hit = lr.time_to_target(_history(post), 10.0, window=3)
    assert hit == {"iteration": 6, "env_steps": 7000, "train_cpu_s": 14.0}
    assert lr.time_to_target(_history(post), 10.0, window=1) == {"iteration": 2, "env_steps": 3000,
                                                                 "train_cpu_s": 6.0}
    assert lr.time_to_target(_history(post), 50.0, window=3) is None
    assert lr.time_to_target(_history(post[:2]), -1.0, window=3) is None  # shorter than the window


def test_target_table_rows_for_in_context_runs_only():
    run = {"method": "in-context", "model": "ssm", "variant": "preset", "seed": 0, "train_cpu_s": 99.0,
           "machine": {"date": "2026-12-04 19:00:00 UTC"},
           "evaluation": {"in-context": {"mean": [-20.0, -9.0], "sem": [1.0, 0.5]}},
           "history": _history([-30.0] * 5 + [-5.0] * 20)}
    maml = {**run, "method": "maml", "evaluation": {"standard": {"mean": [-40.0, -10.0], "sem": [1.0, 1.0]}}}
    lines = lr.target_table("navigation-2d", [run, maml])
    rows = [x for x in lines if x.startswith("| in-context") or x.startswith("| maml")]
    assert len(rows) == 1 and "-11.7" in "\n".join(lines)  # MAML 2017's one-step return is the target
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # the 10-iteration mean first reaches -11.7 at iteration 12 (7 of its 10 iterations at -5)
    assert cells[3:6] == ["12", "1.3e+04", "26"] and cells[6] == "-9.0 ± 0.5" and cells[8] == "2026-12-04 19:00"
    assert lr.target_table("navigation-2d", [maml]) == []


def test_direction_table_splits_the_test_tasks_by_direction(tmp_path, monkeypatch):
    monkeypatch.setattr(lr, "MAML_PER_GOAL", tmp_path / "absent.json")  # no MAML row without its file
    run = {"method": "maml", "model": "mlp", "variant": "", "seed": 3,
           "test_task_params": [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}],
           "evaluation": {"standard": {"per_task": [[0.0, 100.0], [-10.0, 50.0], [2.0, 300.0]]}}}
    rows = [x for x in lr.direction_table([run], 2) if x.startswith("| maml")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[3:] for c in cells] == [["forward (2)", "1.0", "200.0"], ["backward (1)", "-10.0", "50.0"]]
    assert lr.direction_table([{**run, "test_task_params": [{"goal": 1.0}] * 3}], 2) == []  # no directions


def _per_goal_module():
    spec = importlib.util.spec_from_file_location("maml2017_per_goal_t", BENCH / "maml2017_per_goal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_maml_figure_pickles_load_numpy_only(tmp_path):
    import os
    import pickle

    import pytest

    mod = _per_goal_module()
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"task_avg_returns": [np.arange(40.0), [1.0] * 40]}, protocol=4))
    np.testing.assert_array_equal(mod.load_returns(good)[0], np.arange(40.0))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"task_avg_returns": os.getcwd}))  # would import and reference os
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        mod.load_returns(bad)


def test_maml_per_goal_summary_by_direction():
    mod = _per_goal_module()
    goals = mod.test_goals("halfcheetah-dir")  # MAML's np.random.seed(1) draw: 18 forward, 22 backward
    returns = np.where(goals >= 1.0, 300.0, 100.0)[None, :]
    row = mod.summarise("halfcheetah-dir", returns)[0]
    assert (row["forward_goals"], row["forward_mean"], row["backward_mean"]) == (18, 300.0, 100.0)
    assert row["mean"] == round(float(returns.mean()), 3)


def test_distance_table_bins_navigation_goals_by_distance(tmp_path, monkeypatch):
    monkeypatch.setattr(lr, "MAML_PER_GOAL", tmp_path / "absent.json")  # no MAML row without its file
    goals = [(0.1, 0.0), (0.0, 0.3), (0.3, 0.3), (-0.4, 0.2), (0.5, 0.5)]  # distances 0.1, 0.3, 0.42, 0.45, 0.71
    run = {"method": "maml", "model": "mlp", "variant": "", "seed": 1,
           "test_task_params": [{"goal_x": x, "goal_y": y} for x, y in goals],
           "evaluation": {"standard": {"per_task": [[-10.0, -5.0, -2.0, -1.0], [-30.0, -8.0, -4.0, -3.0],
                                                    [-40.0, -6.0, -3.0, -2.0], [-44.0, -10.0, -5.0, -4.0],
                                                    [-70.0, -20.0, -9.0, -8.0]]}}}
    rows = [x for x in lr.distance_table([run]) if x.startswith("| maml")]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[3:] == ["-10.0 / -5.0 / -2.0 (1)", "-30.0 / -8.0 / -4.0 (1)", "-51.3 / -12.0 / -5.7 (3)"]
    assert lr.distance_cells(np.asarray([[0.5, 0.5]]), np.asarray([[-70.0, -20.0, -9.0]]))[0] == "- (0)"  # empty bin
    assert lr.distance_table([{**run, "test_task_params": [{"direction": 1.0}] * 5}]) == []  # not navigation


def test_maml_navigation_summary_keeps_every_goals_return():
    mod = _per_goal_module()
    returns = np.stack([-100.0 * np.linalg.norm(mod.test_goals("navigation-2d"), axis=1), -np.arange(40.0)])
    rows = mod.summarise("navigation-2d", returns)  # (steps, goals) -> one row per step
    assert rows[0]["corr_with_goal_distance"] == -1.0 and rows[1]["returns"] == [-float(i) for i in range(40)]
    assert rows[0]["returns"] == [round(float(x), 3) for x in returns[0]]
    assert "returns" not in mod.summarise("halfcheetah-dir", returns[:, :40])[0]  # per direction instead


def test_load_runs_reads_run_results_and_skips_the_comparisons(tmp_path):
    """Result files under results/learning/<env>/ are runs; results/learning/comparisons/ holds
    benchmarks/compare_runs.py's outputs (a list or a dict of pairs), which are not."""
    import json

    (tmp_path / "navigation-2d").mkdir()
    (tmp_path / lr.COMPARISONS).mkdir()
    run = {"env": "navigation-2d", "method": "maml", "model": "mlp", "variant": "", "seed": 0}
    (tmp_path / "navigation-2d" / "maml-mlp-s0.json").write_text(json.dumps(run))
    (tmp_path / lr.COMPARISONS / "old.json").write_text(json.dumps([{"baseline": "a", "variant": "b"}]))
    (tmp_path / lr.COMPARISONS / "new.json").write_text(json.dumps({"pairs": [], "pooled_paired_held_out": None}))
    runs = lr.load_runs(tmp_path)
    assert list(runs) == ["navigation-2d"] and [r["seed"] for r in runs["navigation-2d"]] == [0]


def test_seed_table_gives_mean_std_and_sem_over_seeds():
    def run(seed: int, mean: list[float], variant: str = "") -> dict:
        return {"method": "maml", "model": "mlp", "variant": variant, "seed": seed,
                "evaluation": {"standard": {"mean": mean, "sem": [0.0] * len(mean)}}}

    runs = [run(0, [0.0, 100.0]), run(1, [2.0, 200.0]), run(2, [4.0, 300.0]), run(0, [9.0, 9.0], "other")]
    rows = [x for x in lr.seed_table(runs, 2) if x.startswith("| maml")]
    assert len(rows) == 1  # a config with one seed has no row
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # std over seeds (ddof 1): 2 and 100; s.e.m. of the mean: std / sqrt(3)
    assert cells[3:] == ["3", "2.0 ± 2.0 (1.2)", "200.0 ± 100.0 (57.7)"]
    assert lr.seed_table(runs[3:], 2) == []
