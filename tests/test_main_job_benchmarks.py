"""The benchmarks that run the README's main job (``benchmarks/main_job.py``, ``benchmarks/meta_gradient_order.py``):
the latter's summary arithmetic, and (slow: each runs ``ssm-metarl train`` several times) both end to end."""

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
