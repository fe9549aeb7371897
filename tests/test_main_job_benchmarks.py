"""The benchmarks that run the README's main job (``benchmarks/main_job.py``, ``benchmarks/meta_gradient_order.py``):
the latter's summary arithmetic, its committed result against benchmarks/README's table of it, and (slow: each
runs ``ssm-metarl train`` several times) both end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCH / "meta_gradient_order.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_meta_gradient_order", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(variant: str, seed: int, heldout: list[float], ratio: float) -> dict:
    return {"variant": variant, "seed": seed, "heldout_mean": heldout, "update_over_sample_median": ratio}


def test_summarise_means_and_paired_differences():
    runs = [_run("default", 0, [-40.0, -20.0], 2.0), _run("default", 1, [-42.0, -18.0], 2.2),
            _run("first_order", 0, [-41.0, -24.0], 1.0), _run("first_order", 1, [-40.0, -26.0], 1.2),
            _run("anil", 2, [-30.0, -30.0], 1.4)]  # a seed the default lacks: no paired difference
    summary, vs = _module().summarise(runs)
    assert summary["default"]["heldout_mean_by_step"] == [-41.0, -19.0]
    assert summary["default"]["update_over_sample_mean"] == pytest.approx(2.1)
    assert summary["first_order"]["update_over_sample_range"] == [1.0, 1.2]
    assert summary["anil"]["seeds"] == [2]
    assert "anil" not in vs and "default" not in vs
    fo = vs["first_order"]
    assert fo["seeds"] == [0, 1]
    # step 0: differences -1 and +2 -> mean 0.5, sem = stdev([-1, 2]) / sqrt(2) = 1.5
    assert fo["by_step"][0]["mean"] == pytest.approx(0.5) and fo["by_step"][0]["sem"] == pytest.approx(1.5)
    # step 1: differences -4 and -8 -> mean -6, sem 2
    assert fo["by_step"][1]["mean"] == pytest.approx(-6.0) and fo["by_step"][1]["sem"] == pytest.approx(2.0)


def test_summarise_one_seed_has_no_sem():
    _, vs = _module().summarise([_run("default", 0, [-1.0], 2.0), _run("first_order", 0, [-3.0], 1.0)])
    assert vs["first_order"]["by_step"] == [{"mean": -2.0, "sem": None}]


def _readme_rows(section: str) -> dict[str, list[str]]:
    """The table under ``section`` in benchmarks/README.md: flags cell (without backticks) -> the row's cells."""
    text = (BENCH / "README.md").read_text()
    body = text[text.index(section):]
    body = body[:body.index("\n### ")]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[2][:1].isdigit():
            rows[cells[1].strip("`")] = cells
    return rows


def test_committed_result_and_its_readme_table_agree():
    """benchmarks/README's table of the meta-gradient-order runs is the committed result's summary, and that
    summary is ``summarise`` of the committed runs (no hand-edited number on either side)."""
    mod = _module()
    doc = json.loads((BENCH / "results" / "meta_gradient_order.json").read_text())
    summary, vs = mod.summarise(doc["runs"])
    assert summary == doc["summary"] and vs == doc["vs_default"]
    rows = _readme_rows("### What the main job's second-order update buys")
    flags = dict(mod.VARIANTS)
    assert set(rows) == {" ".join(flags[name]) for name in summary}
    for name, s in summary.items():
        cells = rows[" ".join(flags[name])]
        assert [float(c.strip("*")) for c in cells[3:7]] == [round(x, 1) for x in s["heldout_mean_by_step"]]
        lo, hi = s["update_over_sample_range"]
        assert cells[7].replace("*", "") == f"{s['update_over_sample_mean']:.2f} ({lo:.2f}-{hi:.2f})", name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_meta_gradient_order_smoke(tmp_path):
    out = tmp_path / "mgo.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["summary"]) == {"default", "first_order"} and len(doc["runs"]) == 2
    assert all(len(r["heldout_mean"]) == 4 and r["update_over_sample_median"] > 0 for r in doc["runs"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_main_job_smoke(tmp_path):
    out = tmp_path / "main_job.json"
    proc = subprocess.run([sys.executable, str(BENCH / "main_job.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["results"]["iterations"] == 2 and doc["results"]["wall_s"] > 0
    assert doc["results"]["evaluation"]["standard"]["mean"]  # the run's held-out evaluation is kept
    assert set(doc["variants"]) == {"first_order", "one_outer_step"}
    assert doc["update_speedup_over_baseline"] > 0
