"""``ssm-metarl tune`` end to end (each test runs the CLI in a subprocess with its own local Ray cluster):
the smoke sweep's table/CSV/heatmap, a trial failure retried from its checkpoint, resume of an
interrupted sweep."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
       "MUJOCO_GL": "disable"}
CMD = [sys.executable, "-m", "ssm_metarl_ray", "tune"]
TINY = {"env": "navigation-2d", "num_train_tasks": 10, "num_test_tasks": 2,
        "model": {"kind": "ssm", "hidden_size": 8, "num_layers": 1, "state_size": 4},
        "meta": {"meta_batch_size": 2, "episodes_per_task": 2},
        "adapt": {"adaptation_mode": "hybrid", "adapt_steps": 1, "experience_batch_size": 4}}

pytestmark = [pytest.mark.ray]


def tune_cli(*args, timeout=240):
    return subprocess.run([*CMD, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.timeout(240)
def test_smoke_sweep_writes_table_csv_heatmap(tmp_path):
    r = tune_cli("--config", "tune_configs/smoke.yaml", "--storage-path", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    exp = tmp_path / "smoke"
    assert "buffer_size" in r.stdout and "experience_weight" in r.stdout and "hybrid-standard" in r.stdout
    rows = read_csv(exp / "results.csv")
    assert len(rows) == 4 and {row["status"] for row in rows} == {"TERMINATED"}
    assert {(row["adapt.buffer_size"], row["adapt.experience_weight"]) for row in rows} == \
        {("500", "0.0"), ("500", "0.5"), ("5000", "0.0"), ("5000", "0.5")}
    for row in rows:  # each trial: its own placement group (trial + rollout worker) and named buffer actor
        assert row["runtime"] == "ray" and row["placement_group_bundles"] == "2"
        assert row["buffer_actor"] == f"ssm-metarl:tune-{row['trial_id']}:buffer"
    for row in rows:
        assert float(row["post_adapt_return"]) == float(row["hybrid/post_adapt_return"])
        assert row["trial_id"] in r.stdout
        if row["adapt.experience_weight"] == "0.0":  # no replay loss: hybrid == standard exactly
            assert row["hybrid/post_adapt_return"] == row["standard/post_adapt_return"]
    # buffer_size / experience_weight do not change meta-training: the standard result is the same everywhere
    assert len({row["standard/post_adapt_return"] for row in rows}) == 1
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["metric"] == "post_adapt_return" and len(summary["cells"]) == 4
    assert summary["best"]["trial_id"] == rows[0]["trial_id"]
    assert (exp / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Tune's own layout: one folder per trial with its checkpoint (learner state + buffer)
    ckpts = sorted(exp.glob("trial_*/checkpoint_*"))
    assert len(ckpts) == 4
    assert all((c / "learner.pt").is_file() and (c / "buffer.npz").is_file() for c in ckpts)


@pytest.mark.timeout(240)
def test_failed_trial_is_retried_from_its_checkpoint(tmp_path):
    """The trial raises once at iteration 2 (after the checkpoint of iteration 1); Tune retries it, it
    restores learner + optimizer + buffer from that checkpoint and ends exactly where an uninterrupted run
    would. Evaluator actors get their own bundle here (num_evaluators: 1)."""
    cfg = {"name": "retry",
           "base": {**TINY, "iterations": 2, "adapt": {**TINY["adapt"], "buffer_size": 2000}},
           "report_every": 1, "inject_failure_at": 2, "max_failures": 1,
           "resources": {"learner_cpus": 0.5, "num_workers": 1, "cpus_per_worker": 0.5, "num_evaluators": 1,
                         "cpus_per_evaluator": 0.5}}
    (tmp_path / "retry.yaml").write_text(yaml.safe_dump(cfg))
    r = tune_cli("--config", str(tmp_path / "retry.yaml"), "--storage-path", str(tmp_path / "store"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "InjectedFailure" in r.stderr
    (row,) = read_csv(tmp_path / "store" / "retry" / "results.csv")
    assert row["status"] == "TERMINATED" and row["num_failures"] == "1"
    assert row["restored_from_iteration"] == "1" and row["iteration"] == "2"
    assert row["placement_group_bundles"] == "3"  # trial, rollout worker, evaluator

    # the same experiment without Ray and without the failure: identical standard-mode result
    import torch

    from ssm_metarl_ray.sweeps import parse_sweep
    from ssm_metarl_ray.sweeps.spec import build_experiment_config
    from ssm_metarl_ray.training.evaluate import evaluate_modes
    from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, meta_train

    spec = parse_sweep(cfg)
    exp = build_experiment_config(spec.base, {})
    torch.set_num_threads(1)
    state = meta_train(build_state(exp), LocalSampler(exp, seed=exp.seed))
    ref = evaluate_modes(exp, state.learner.get_weights(), state.test_tasks, None, ["standard"],
                         state.learner.version)
    assert float(row["standard/post_adapt_return"]) == pytest.approx(ref["standard"]["mean"][-1], abs=1e-6)


@pytest.mark.timeout(300)
def test_interrupted_sweep_resumes(tmp_path):
    """SIGINT while the first of two trials runs -> exit 130 with a --resume hint; --resume finishes both,
    the interrupted one from its checkpoint (trials sample in-process here: num_workers 0)."""
    cfg = {"name": "resume",
           "base": {**TINY, "iterations": 16, "meta": {"meta_batch_size": 4, "episodes_per_task": 4}},
           "search": {"experience_weight": {"grid": [0.0, 0.5]}}, "report_every": 1,
           "max_concurrent_trials": 1, "resources": {"learner_cpus": 1, "num_workers": 0}}
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump(cfg))
    store = tmp_path / "store"
    args = ["--config", str(tmp_path / "resume.yaml"), "--storage-path", str(store)]
    with open(tmp_path / "first.log", "w") as log:
        p = subprocess.Popen([*CMD, *args], stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            deadline = time.monotonic() + 150  # interrupt once the driver has registered a checkpoint
            while "checkpoint: trial" not in (tmp_path / "first.log").read_text():
                assert p.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 150 s"
                time.sleep(0.2)
            p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=90)
        finally:
            if p.poll() is None:
                p.kill()
    first = (tmp_path / "first.log").read_text()
    assert rc == 130, first[-3000:]
    assert "--resume" in first and not (store / "resume" / "results.csv").exists()

    r = tune_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_csv(store / "resume" / "results.csv")
    assert len(rows) == 2 and {row["status"] for row in rows} == {"TERMINATED"}
    assert {row["iteration"] for row in rows} == {"16"}
    # the interrupted trial continued from the last checkpoint the driver had registered, not from scratch
    last = [int(x) for x in re.findall(r"checkpoint: trial \S+ at iteration (\d+)", first)]
    assert last and last[-1] < 16, first[-3000:]  # interrupted mid-trial
    assert max(int(row["restored_from_iteration"]) for row in rows) == last[-1]
