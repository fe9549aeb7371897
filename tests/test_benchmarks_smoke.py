"""Each benchmark script runs end to end with ``--smoke`` (tiny sizes, nothing written)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("ray")
from ray_util import ray_local  # noqa: E402,F401  (fixture)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240), pytest.mark.usefixtures("ray_local")]

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(name: str) -> dict:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(["--smoke"])  # uses the fixture's cluster (init_ray attaches to nothing, starts nothing)


def test_sampling_throughput_smoke():
    out = _run("sampling_throughput")
    assert out["results"]["raw_env"]["steps_per_s_median"] > 0
    assert set(out["ratios"]) >= {"ray_1_worker_vs_raw_env", "ray_2_workers_vs_raw_env",
                                  "ray_2_workers_vs_1_worker"}


def test_buffer_throughput_smoke():
    out = _run("buffer_throughput")
    assert out["summary"]["best_add_transitions_per_s"] > 0
    assert "1_readers_1_writer" in out["sample_sequences"]


def test_broadcast_smoke():
    out = _run("broadcast")
    assert [r["hidden_size"] for r in out["results"]] == [16]
    assert all(r["put_plus_broadcast_ms_median"] > 0 for r in out["results"])


def test_buffer_durability_smoke():
    out = _run("buffer_durability")
    assert out is not None


def test_soak_smoke():
    out = _run("soak")
    assert out is not None


def test_blas_threads_smoke():
    out = _run("blas_threads")
    assert all(r["one_thread_ms"] > 0 for r in out["results"])


def test_learning_benchmark_smoke(tmp_path):
    """One tiny MetaMAML run under the MAML protocol's code path, then the report over it."""
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "halfcheetah-dir" / "maml-ssm-s0.json"
    run = mod.main(["run", "--env", "halfcheetah-dir", "--model", "ssm", "--smoke", "--out", str(out)])
    assert run["train_env_steps"] == 2 * 2 * 2 * 200  # 1 iteration x 2 tasks x (pre + post) x 2 episodes
    assert set(run["evaluation"]) == {"standard", "hybrid"}
    assert len(run["evaluation"]["standard"]["mean"]) == 2  # before and after 1 adaptation step
    from learning_report import report  # importable once learning.py has put benchmarks/ on sys.path

    rep = report(tmp_path)
    assert len(rep["rows"]) == 2 and all(Path(p).is_file() for p in rep["plots"])
    text = (tmp_path / "REPORT.md").read_text()
    assert "MAML 2017 maml (published)" in text and "293.2" in text  # the published 1-step return


def test_adaptation_step_probe_smoke():
    out = _run("adaptation_step_probe")
    assert [r["variant"] for r in out["results"]] == ["mlp tanh64 (default)"]
    steps = out["results"][0]["steps_mean_over_directions"]
    assert len(steps) == 2 and steps[0]["grad_norm"] > 0 and steps[0]["action_change_std"] > 0


def test_inner_step_size_smoke():
    out = _run("inner_step_size")
    nav = out["results"]["navigation-2d"]
    assert set(nav) == {"mlp", "ssm"}
    # one inner step moves the action distribution, more for a bigger step
    assert 0 < nav["mlp"]["0.02"]["action_change"] < nav["mlp"]["0.5"]["action_change"]


def test_learning_benchmark_resumes_from_its_checkpoint(tmp_path):
    """--stop-after cuts a run into pieces; --resume continues it from the small checkpoint."""
    spec = importlib.util.spec_from_file_location("bench_learning2", BENCH / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt, out = tmp_path / "ckpt", tmp_path / "navigation-2d" / "maml-mlp-s0.json"
    args = ["run", "--env", "navigation-2d", "--model", "mlp", "--meta-batch", "2", "--episodes", "2",
            "--iterations", "3", "--test-tasks", "2", "--adapt-steps", "1", "--modes", "standard",
            "--checkpoint-dir", str(ckpt), "--out", str(out)]
    with pytest.raises(SystemExit, match="--resume"):
        mod.main([*args, "--stop-after", "1e-9"])  # checkpoint after iteration 1, then stop
    assert (ckpt / "weights.pt").is_file() and not (ckpt / "buffer.npz").exists()
    run = mod.main([*args, "--resume"])
    assert [h["iteration"] for h in run["history"]] == [1, 2, 3]
    assert 0.9 * 3 * 2 * 2 * 2 * 100 <= run["train_env_steps"] <= 3 * 2 * 2 * 2 * 100  # episodes end at the goal
    full = mod.main([*args, "--checkpoint-dir", str(tmp_path / "other"), "--out", str(tmp_path / "full.json")])
    assert full["train_env_steps"] == run["train_env_steps"]  # the step counter resumes exactly
    # resuming reproduces the uninterrupted run (same task draws and sampling seeds)
    assert [h["meta/post_return"] for h in full["history"]] == [h["meta/post_return"] for h in run["history"]]


def test_grouped_rollouts_smoke():
    out = _run("grouped_rollouts")
    assert all(r["grouped_steps_per_s"] > 0 and r["speedup"] > 0 for r in out["results"])


def test_inference_share_smoke():
    out = _run("inference_share")
    fr = out["results"][0]["median_fractions"]
    assert {"policy_step", "action_sampling", "env_step", "inner_update", "advantages", "other"} <= set(fr)
    assert all(0.0 <= v <= 1.0 for k, v in fr.items() if k != "other") and abs(sum(fr.values()) - 1.0) < 1e-9


def test_learner_phases_smoke():
    out = _run("learner_phases")
    ms = out["per_task_ms"]
    assert set(ms) == {"forward", "inner_forward", "inner_backward", "outer_forward", "outer_backward",
                       "task_meta_gradient", "first_order"} and all(v > 0 for v in ms.values())
    assert out["meta_batch_s"]["loop"] > 0 and out["meta_batch_s"]["vmap"] > 0
    ln = out["layer_norm_vmap_relative_error"]
    assert ln["torch.layer_norm(z) * weight + bias"] < 1e-12  # the written-out affine part is exact under vmap
