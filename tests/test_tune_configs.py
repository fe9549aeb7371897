"""Sweep YAML validation (no Ray cluster): shipped configs, bad configs -> one-line errors, CLI exit code 2,
and the result table / CSV / heatmap writers on synthetic trial rows."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssm_metarl_ray.sweeps import SweepConfigError, load_sweep, parse_sweep
from ssm_metarl_ray.sweeps.report import cells, format_table, write_outputs
from ssm_metarl_ray.sweeps.spec import build_experiment_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tune_configs"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

GOOD = {
    "name": "t",
    "base": {"iterations": 4, "model": {"hidden_size": 8}, "adapt.adaptation_mode": "hybrid"},
    "search": {"buffer_size": {"grid": [1000, 2000]}, "experience_weight": {"grid": [0.0, 0.5]}},
    "report_every": 2,
}


def with_(**kw):
    d = json.loads(json.dumps(GOOD))
    for k, v in kw.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def test_shipped_configs_validate():
    smoke = load_sweep(CONFIGS / "smoke.yaml")
    assert smoke.num_grid_trials <= 4 and smoke.max_iterations <= 3 and smoke.cpus_per_trial <= 2
    assert smoke.heatmap == ("adapt.buffer_size", "adapt.experience_weight")

    hyb = load_sweep(CONFIGS / "hybrid_sweep.yaml")
    assert hyb.base["env"] == "navigation-2d" and hyb.metric == "post_adapt_return"
    assert len(hyb.search["adapt.buffer_size"].values) >= 3
    ew = hyb.search["adapt.experience_weight"].values
    assert len(ew) >= 3 and 0.0 in ew
    assert hyb.cpus_per_trial <= 2 and set(hyb.eval_modes) == {"standard", "hybrid"}

    hc = load_sweep(CONFIGS / "hybrid_sweep_halfcheetah.yaml")
    assert hc.base["env"] == "halfcheetah-dir" and set(hc.eval_modes) == {"standard", "hybrid"}
    assert hc.num_grid_trials == 12 and hc.cpus_per_trial <= 2

    lr = load_sweep(CONFIGS / "lr_search.yaml")
    assert lr.scheduler["type"] == "asha" and lr.scheduler["max_t"] == lr.max_reports
    assert {"meta.inner_lr", "meta.outer_lr"} <= set(lr.search)
    assert lr.search["meta.outer_lr"].values == (3e-4, 1e-2)
    assert lr.cpus_per_trial <= 2


def test_names_values_and_derived_fields():
    spec = parse_sweep(with_(search={"inner_lr": {"grid": [0.05, 0.1]},
                                     "adapt.clip_eps": {"choice": [0.1, 0.2]},
                                     "outer_lr": {"loguniform": ["1e-4", 1e-2]}}))
    assert set(spec.search) == {"meta.inner_lr", "adapt.clip_eps", "meta.outer_lr"}
    assert spec.search["meta.outer_lr"].values == (1e-4, 1e-2)  # YAML 1.1 reads 1e-4 as a string
    assert spec.base == {"iterations": 4, "model.hidden_size": 8, "adapt.adaptation_mode": "hybrid"}
    cfg = build_experiment_config(spec.base, {"meta.inner_lr": 0.05, "meta.episodes_per_task": 3})
    assert cfg.adapt.adapt_lr == 0.05 and cfg.adapt.episodes_per_step == 3  # as `ssm-metarl train`
    cfg = build_experiment_config({"adapt.adapt_lr": 0.3}, {"meta.inner_lr": 0.05})
    assert cfg.adapt.adapt_lr == 0.3
    assert spec.max_reports == 2 and spec.heatmap == ("meta.inner_lr", "adapt.clip_eps")  # the discrete ones


def test_resources_and_bundles():
    spec = parse_sweep(with_(resources={"learner_cpus": 1, "num_workers": 2, "cpus_per_worker": 0.25,
                                        "num_evaluators": 1, "cpus_per_evaluator": 0.5}))
    assert spec.bundles() == [{"CPU": 1.0}, {"CPU": 0.25}, {"CPU": 0.25}, {"CPU": 0.5}]
    assert spec.cpus_per_trial == 2.0
    local = parse_sweep(with_(resources={"num_workers": 0, "learner_cpus": 1}))
    assert local.bundles() == [{"CPU": 1.0}]  # sampling, buffer and evaluation inside the trial


def test_trial_resources_placement_group_factory():
    pytest.importorskip("ray.tune")
    from ssm_metarl_ray.runtime.tune import param_space, trial_resources

    spec = parse_sweep(with_(resources={"num_workers": 1, "num_evaluators": 1}))
    pgf = trial_resources(param_space(spec))
    assert pgf.bundles == [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5}] and pgf.strategy == "PACK"


@pytest.mark.parametrize("doc, needle", [
    (with_(colour="red"), "unknown key 'colour'"),
    (with_(name=None), "name: required"),
    (with_(base={"iterations": 4, "learning_rate": 0.1}), "unknown parameter 'learning_rate'"),
    (with_(base={"model": {"kind": "rnn"}}), "unknown model.kind 'rnn'"),
    (with_(base={"env": "moon-lander"}), "unknown env 'moon-lander'"),
    (with_(base={"buffer_size": -5}), "adapt.buffer_size must be a positive integer, got -5"),
    (with_(base={"iterations": 2.5}), "iterations must be an integer"),
    (with_(base={"output_dir": "x"}), "output_dir cannot be set"),
    (with_(search={"experience_weight": {"grid": [0.0, 1.5]}}),
     "adapt.experience_weight must be in [0, 1], got 1.5"),
    (with_(search={"inner_lr": {"uniform": [0.2, 0.1]}}), "low must be < high"),
    (with_(search={"inner_lr": {"loguniform": [0.0, 0.1]}}), "meta.inner_lr must be a finite number > 0, got 0.0"),
    (with_(search={"buffer_size": {"uniform": [10, 100]}}), "uniform needs a float parameter"),
    (with_(search={"inner_lr": {"normal": [0, 1]}}), "must be exactly one of"),
    (with_(search={"inner_lr": {"grid": []}}), "non-empty list"),
    (with_(search={"clip_eps": {"grid": [0.1]}}), "ambiguous"),
    (with_(search={"iterations": {"grid": [2, 3]}}), "set in both base and search"),
    (with_(metric="reward"), "unknown metric 'reward'"),
    (with_(metric="hybrid_minus_standard", eval_modes=["hybrid"]), "unknown metric 'hybrid_minus_standard'"),
    (with_(mode="maximize"), "mode: must be max or min"),
    (with_(eval_modes=["standard"]), "'hybrid' (the mode of post_adapt_return) is not in eval_modes"),
    (with_(eval_modes=["both"]), "eval_modes"),
    (with_(scheduler="pbt"), "scheduler: must be none, asha"),
    (with_(scheduler={"type": "asha", "patience": 3}), "unknown key 'patience'"),
    (with_(scheduler={"type": "asha", "grace_period": 5, "max_t": 2}), "max_t"),
    (with_(scheduler={"type": "asha", "reduction_factor": 1}), "reduction_factor"),
    (with_(num_samples=0), "num_samples: must be an integer >= 1"),
    (with_(max_failures=-1), "max_failures"),
    (with_(report_every=0), "report_every"),
    (with_(resources={"gpus": 1}), "resources: unknown key 'gpus'"),
    (with_(resources={"cpus_per_worker": 0}), "resources.cpus_per_worker"),
    (with_(resources={"num_workers": -1}), "resources.num_workers"),
    (with_(heatmap=["buffer_size", "inner_lr"]), "meta.inner_lr must be searched"),
    (with_(inject_failure_at=2), "inject_failure_at: must be > report_every"),
    (["not", "a", "mapping"], "must be a mapping"),
])
def test_bad_configs_one_line_error(doc, needle):
    with pytest.raises(SweepConfigError) as e:
        parse_sweep(doc, "bad.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("bad.yaml: ")
    assert needle in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nsearch: {buffer_size: [1, 2\n")
    with pytest.raises(SweepConfigError, match="not valid YAML") as e:
        load_sweep(p)
    assert "\n" not in str(e.value)
    with pytest.raises(SweepConfigError, match="is not a file"):
        load_sweep(tmp_path / "nope.yaml")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ssm_metarl_ray", *args], capture_output=True, text=True,
                          env=ENV, timeout=120)


@pytest.mark.parametrize("doc, needle", [
    (with_(colour="red"), "unknown key 'colour'"),
    (with_(search={"experience_weight": {"grid": [0.0, 1.5]}}), "must be in [0, 1]"),
    (with_(metric="reward"), "unknown metric 'reward'"),
])
def test_cli_bad_config_exit_2(tmp_path, doc, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    store = tmp_path / "store"
    r = cli("tune", "--config", str(cfg), "--storage-path", str(store))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssm-metarl: error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not store.exists()  # nothing started, nothing written


def test_cli_resume_and_overwrite_checks_exit_2(tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(yaml.safe_dump(GOOD))
    r = cli("tune", "--config", str(cfg), "--storage-path", str(tmp_path / "empty"), "--resume")
    assert r.returncode == 2 and "no sweep 't' to resume" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    exp = tmp_path / "store" / "t"
    exp.mkdir(parents=True)
    (exp / "experiment_state-2026.json").write_text("{}")
    r = cli("tune", "--config", str(cfg), "--storage-path", str(tmp_path / "store"))
    assert r.returncode == 2 and "pass --resume" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("tune", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "is not a file" in r.stderr


def _row(tid, bs, ew, seed, std, hyb, status="TERMINATED"):
    metrics = {"iteration": 4, "post_adapt_return": sum(hyb) / len(hyb), "post_adapt_sem": 0.1,
               "standard/post_adapt_return": sum(std) / len(std), "standard/post_adapt_sem": 0.1,
               "hybrid/post_adapt_return": sum(hyb) / len(hyb), "hybrid/post_adapt_sem": 0.1,
               "hybrid_minus_standard": (sum(hyb) - sum(std)) / len(hyb), "hybrid_minus_standard_sem": 0.0,
               "standard/per_task_post": std, "hybrid/per_task_post": hyb}
    return {"trial_id": tid, "status": status, "num_failures": 0, "metrics": metrics, "error": None,
            "path": "", "params": {"adapt.buffer_size": bs, "adapt.experience_weight": ew, "seed": seed}}


def test_report_outputs(tmp_path):
    spec = parse_sweep(with_(search={"buffer_size": {"grid": [1000, 2000]},
                                     "experience_weight": {"grid": [0.0, 0.5]}, "seed": {"grid": [0, 1]}}))
    rows = [_row(f"t{i}", bs, ew, s, [-10.0 - s, -12.0], [-10.0 - s + ew * (bs / 1000), -12.0 + ew])
            for i, (bs, ew, s) in enumerate((bs, ew, s) for bs in (1000, 2000) for ew in (0.0, 0.5)
                                            for s in (0, 1))]
    rows.append({**_row("bad", 1000, 0.5, 2, [0.0], [0.0], status="ERROR"), "metrics": {}, "error": "boom"})
    table = format_table(spec, rows)
    assert table.splitlines()[0].split()[:4] == ["trial", "buffer_size", "experience_weight", "seed"]
    assert table.splitlines()[2].startswith("t6")  # best first (bs 2000, ew 0.5, seed 0)
    c = {(x["adapt.buffer_size"], x["adapt.experience_weight"]): x for x in cells(spec, rows)}
    assert len(c) == 4 and c[(1000, 0.5)]["trials"] == 2  # the errored trial is left out
    # pooled over the 2 seeds x 2 tasks: per-task paired differences 1.0, 0.5, 1.0, 0.5
    assert c[(2000, 0.5)]["hybrid_minus_standard"] == pytest.approx(0.75)
    assert c[(2000, 0.5)]["hybrid_minus_standard_se"] == pytest.approx(0.2886751 / 2, rel=1e-5)
    assert c[(1000, 0.0)]["hybrid_minus_standard"] == 0.0
    paths = write_outputs(tmp_path, spec, rows, {"storage": "x"})
    with open(paths["csv"]) as f:
        got = list(csv.DictReader(f))
    assert len(got) == 9 and got[0]["trial_id"] == "t6" and got[-1]["status"] == "ERROR"
    summary = json.loads(paths["summary"].read_text())
    assert summary["best"]["trial_id"] == "t6" and len(summary["cells"]) == 4
    assert paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
