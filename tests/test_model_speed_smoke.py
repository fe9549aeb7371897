"""``benchmarks/model_speed.py --smoke`` runs end to end (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "model_speed.py"


@pytest.mark.timeout(300)
def test_model_speed_smoke(tmp_path):
    out = tmp_path / "model_speed.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    kinds = ["ssm", "lstm", "gru", "transformer", "mlp"]
    assert doc["meta"]["smoke"] and doc["meta"]["torch"] and doc["meta"]["date"]
    assert set(kinds) <= set(doc["models"])
    for row in doc["training"]:
        for k in doc["models"]:
            r = row["results"][k]
            assert len(r["total_s"]) == row["reps"] and all(t > 0 for t in r["total_s"])
    assert [r["B"] for r in doc["step_latency"]] == doc["config"]["step_batches"]
    for row in doc["step_latency"]:
        # Policy.step, the rollout path, the rollout path called with a zeros done_t (the old call), and the
        # SSM's rollout path without its fused small-batch layers
        assert set(row["results"]) == (set(kinds) | {k + p for k in kinds for p in ("/packed", "/packed+zeros")}
                                       | {"ssm/packed-unfused"})
    assert set(doc["memory"]["results"]) == set(doc["models"])
    for e in doc["summary"]["training"]:
        assert e["models"]["ssm"]["ratio_to_ssm_min"] == pytest.approx(1.0)
    for e in doc["summary"]["step_latency"]:  # each path is compared with the SSM on the same path
        assert e["models"]["ssm"]["ratio_to_ssm_min"] == pytest.approx(1.0)
        assert e["models"]["ssm/packed"]["ratio_to_ssm_min"] == pytest.approx(1.0)
        assert e["models"]["ssm/packed+zeros"]["ratio_to_ssm_min"] == pytest.approx(1.0)
    report = (tmp_path / "MODEL_SPEED.md").read_text()
    assert "SMOKE RUN" in report and "Ratio to the SSM" in report and "Memory at T" in report


@pytest.mark.timeout(300)
def test_step_processes_smoke(tmp_path):
    """``benchmarks/step_processes.py --smoke``: two fresh processes, a ratio per process and batch."""
    out = tmp_path / "step_processes.json"
    script = SCRIPT.with_name("step_processes.py")
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["smoke"] and len(doc["per_process"]) == 2
    for run in doc["per_process"]:
        assert set(run) == {"1", "4"} and all(r["lstm"] > 0 and r["gru"] > 0 for r in run.values())
    for b, s in doc["summary"].items():
        lstm = [run[b]["lstm"] for run in doc["per_process"]]
        assert s["lstm"]["min"] == min(lstm) and s["lstm"]["max"] == max(lstm)
        assert s["lstm"]["processes_above_1"] == sum(r > 1 for r in lstm)
