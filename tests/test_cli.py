"""End-to-end CLI runs in a subprocess, and one-line errors (exit code 2) for bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "MUJOCO_GL": "disable"}
SMALL = ["--iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "3", "--num-test-tasks", "2",
         "--adapt-steps", "1", "--hidden-size", "16", "--num-layers", "1", "--quiet"]


def main_here(capsys, *args) -> tuple[int, str]:
    """The CLI in this process (no interpreter start per case): (exit code, stderr)."""
    from ssm_metarl_ray.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ssm_metarl_ray", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


def test_train_then_evaluate(tmp_path):
    out = tmp_path / "run"
    r = cli("train", *SMALL, "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "standard" in r.stdout and "hybrid" in r.stdout
    for f in ("checkpoint/config.json", "checkpoint/weights.pt", "checkpoint/buffer.npz", "metrics.json",
              "adaptation.png"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["evaluation"]) == {"standard", "hybrid"}
    assert len(metrics["evaluation"]["standard"]["mean"]) == 2  # before + after 1 step
    assert len(metrics["history"]) == 2
    r = cli("evaluate", "--checkpoint", str(out / "checkpoint"), "--adaptation-mode", "standard")
    assert r.returncode == 0, r.stderr
    ev = json.loads((out / "evaluation" / "metrics.json").read_text())
    # same checkpoint, same seeds: the evaluation is reproducible
    assert ev["evaluation"]["standard"]["mean"] == metrics["evaluation"]["standard"]["mean"]


def test_in_context_task_inference_trains_on_ray_and_resumes(tmp_path):
    """--method in-context --task-inference-coef over a Ray rollout worker: the task-inference loss is in
    every iteration's metrics, and the learner's head travels in the checkpoint (resume continues)."""
    out = tmp_path / "run"
    args = ["--method", "in-context", "--task-inference-coef", "1", "--adaptation-mode", "in-context", *SMALL]
    r = cli("train", *args, "--num-workers", "1", "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(h["meta/task_inference_loss"] > 0 for h in history)
    r = cli("train", "--resume", str(out / "checkpoint"), "--iterations", "3", "--num-workers", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(history) == 3 and history[-1]["meta/task_inference_loss"] > 0


def test_original_flag_spellings(tmp_path):
    r = cli("train", "--env_name", "navigation-2d", "--adaptation_mode", "hybrid", "--num_epochs", "1",
            "--buffer_size", "5000", "--experience_weight", "0.2", *SMALL[2:], "--output-dir", str(tmp_path / "o"),
            "--num-workers", "0")  # the flags are the point here; test_train_then_evaluate runs on Ray
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert list(metrics["evaluation"]) == ["hybrid"]
    assert metrics["config"]["adapt"]["buffer_size"] == 5000 and metrics["config"]["iterations"] == 1


@pytest.mark.parametrize("args, needle", [
    (["train", "--env", "moon-lander"], "'moon-lander'"),
    (["train", "--model", "rnn"], "'rnn'"),
    (["train", "--buffer-size", "-5"], "--buffer-size"),
    (["train", "--experience-weight", "1.5"], "[0, 1]"),
    (["train", "--adaptation-mode", "both"], "'both'"),
    (["train", "--iterations", "abc"], "abc"),
    (["evaluate", "--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["train", "--outer-optimizer", "adam"], "'adam'"),
    (["train", "--max-kl", "inf"], "--max-kl"),
    (["train", "--preset", "maml2018"], "'maml2018'"),
    (["train", "--env", "ant-goal", "--preset", "maml2017"], "ant-goal"),
    (["train", "--value-coef", "-1"], "--value-coef"),
    (["train", "--baseline", "zero"], "'zero'"),
    # negative, non-finite, huge, wrong type (issue 13): stopped before any work starts
    (["train", "--seed", "-1"], "--seed must be an integer in [0, "),
    (["train", "--inner-lr", "inf"], "--inner-lr must be a finite number > 0, got inf"),
    (["train", "--adapt-lr", "inf"], "--adapt-lr must be a finite number > 0, got inf"),
    (["train", "--outer-lr", "nan"], "--outer-lr"),
    (["train", "--grad-clip", "-inf"], "--grad-clip"),
    (["train", "--experience-weight", "nan"], "--experience-weight must be in [0, 1], got nan"),
    (["train", "--head-init-gain", "0"], "--head-init-gain"),
    (["train", "--threads", "100000"], "--threads must be an integer in [0, 1024]"),
    (["train", "--hidden-size", "2.5"], "2.5"),
    (["train", "--model", "transformer", "--hidden-size", "7"], "multiple of model.num_heads"),
    (["train", "--buffer-size", "1000000000000000"], "reduce --buffer-size"),
    (["train", "--hidden-size", "1000000000000000"], "reduce --hidden-size"),
    (["train", "--meta-batch-size", "1000000000"], "reduce --meta-batch-size"),
    (["train", "--num-train-tasks", "100000000000"], "reduce --num-train-tasks"),
    (["train", "--sample-timeout", "inf"], "--sample-timeout must be a finite number > 0, got inf"),
    (["train", "--learner-gpus", "nan"], "--learner-gpus must be a finite number >= 0, got nan"),
    (["train", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["train", "--ssm-r-min", "0.9995"], "--ssm-r-min must be below"),
    (["train", "--ssm-r-min", "-0.1"], "--ssm-r-min must be in [0, 1]"),
    (["train", "--ssm-input-hidden", "-3"], "--ssm-input-hidden must be an integer >= 0, got -3"),
    (["train", "--recurrent-lr-scale", "0"], "--recurrent-lr-scale"),
    (["train", "--balanced-tasks"], "--balanced-tasks needs a meta-batch size that is a multiple of the number of "
                                    "distinct training tasks (100), got 10"),
    (["train", "--env", "halfcheetah-dir", "--balanced-tasks", "--meta-batch-size", "3"], "tasks (2), got 3"),
    (["evaluate", "--checkpoint", "/nonexistent/ckpt", "--num-test-tasks", "-2"], "--num-test-tasks"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, needle):
    out = tmp_path / "never"
    code, err = main_here(capsys, *args, "--output-dir", str(out)) if args[0] == "train" else main_here(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [(["train", "--seed", "-1"], "--seed must be an integer in [0, "),
                                          (["train", "--buffer-size", "1000000000000000"], "reduce --buffer-size")])
def test_bad_input_in_a_fresh_process(tmp_path, args, needle):
    """The same as the table above through a real process: exit status, and nothing but the line on stderr."""
    out = tmp_path / "never"
    r = cli(*args, "--output-dir", str(out))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert not out.exists()


def test_unwritable_output_dir_is_refused_before_training(tmp_path):
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path / "a-file" / "sub", Path("/proc/no-such-dir/run")):
        r = cli("train", *SMALL, "--output-dir", str(bad))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "is not writable" in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):  # root ignores permissions: nothing to test there
            return
        r = cli("train", *SMALL, "--output-dir", str(read_only / "run"))
        assert r.returncode == 2 and "is not writable" in r.stderr and not (read_only / "run").exists()
    finally:
        read_only.chmod(0o700)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    r = cli("train", *SMALL, "--num-workers", "0", "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _set_config(**changes):
    def corrupt(ckpt):
        cfg = json.loads((ckpt / "config.json").read_text())
        for dotted, v in changes.items():
            top, _, sub = dotted.partition(".")
            (cfg[top] if sub else cfg)[sub or top] = v
        (ckpt / "config.json").write_text(json.dumps(cfg))
    return corrupt


CORRUPTIONS = {
    "truncated buffer": (lambda c: _truncate(c / "buffer.npz"), "buffer.npz"),
    "truncated weights": (lambda c: _truncate(c / "weights.pt"), "weights.pt"),
    "truncated learner": (lambda c: _truncate(c / "learner.pt"), "learner.pt"),
    "config wrong type": (_set_config(**{"model.hidden_size": "big"}), "model.hidden_size must be an integer"),
    "config negative": (_set_config(seed=-1), "seed must be an integer in [0, "),
    "config non-finite": (_set_config(**{"meta.inner_lr": float("inf")}), "meta.inner_lr"),
    "config unknown key": (_set_config(**{"model.depth": 3}), "depth"),
    "config shape mismatch": (_set_config(**{"model.hidden_size": 32}), "does not match"),
    "state wrong type": (lambda c: (c / "state.json").write_text('{"iteration": "x"}'), "iteration"),
    "config not JSON": (lambda c: (c / "config.json").write_text("{"), "config.json"),
}


@pytest.mark.parametrize("command", ["resume", "evaluate"])
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_bad_checkpoint_one_line_exit_2(tmp_path, capsys, finished_run, command, case):
    corrupt, needle = CORRUPTIONS[case]
    if command == "evaluate" and case in ("truncated learner", "state wrong type"):
        pytest.skip("evaluate reads only config, weights and buffer")
    if command == "resume" and case == "truncated weights":
        pytest.skip("--resume reads the weights from learner.pt (with the optimizer state), not weights.pt")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    corrupt(run / "checkpoint")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    if command == "resume":
        args = ("train", "--resume", str(run), "--iterations", "3", "--num-workers", "0", "--quiet")
    else:
        args = ("evaluate", "--checkpoint", str(run / "checkpoint"), "--adaptation-mode", "hybrid")
    if case == "truncated weights":  # a real process: torch's warning must not reach stderr either
        r = cli(*args)
        code, err = r.returncode, r.stderr
    else:
        code, err = main_here(capsys, *args)
    assert code == 2, err[-2000:]
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written


def test_preset_sets_the_published_protocol_and_explicit_flags_win(tmp_path):
    out = tmp_path / "p"
    r = cli("train", "--preset", "maml2017", "--model", "mlp", "--iterations", "1", "--meta-batch-size", "2",
            "--outer-optimizer", "trpo",
            "--episodes-per-task", "2", "--num-test-tasks", "2", "--adapt-steps", "1", "--adaptation-mode",
            "standard", "--num-workers", "0", "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    assert cfg["iterations"] == 1 and cfg["meta"]["meta_batch_size"] == 2  # given explicitly
    assert cfg["meta"]["inner_lr"] == 0.5 and cfg["adapt"]["adapt_lr"] == 0.5  # navigation-2d's step size
    assert cfg["meta"]["outer_optimizer"] == "trpo" and cfg["meta"]["outer_steps"] == 5  # explicit / preset
    assert cfg["num_train_tasks"] == 1000
    # the progress line shows whether the inner step moves the policy
    assert "inner-kl" in r.stderr and "std" in r.stderr
    hist = json.loads((out / "metrics.json").read_text())["history"][0]
    for key in ("health/action_change", "health/kl", "grad/core", "grad/actor", "trpo/step_fraction"):
        assert key in hist, key


def test_unreadable_checkpoint_is_rejected_without_unpickling(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"env": "navigation-2d"}))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    (ckpt / "weights.pt").write_bytes(pickle.dumps(Evil()))
    r = cli("evaluate", "--checkpoint", str(ckpt))
    assert r.returncode == 2 and "not readable" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_envs_lists_families():
    r = cli("envs")
    assert r.returncode == 0
    for name in ("navigation-2d", "cartpole-physics", "halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal"):
        assert name in r.stdout


# ---- coming from SSM-MetaRL-Unified: gymnasium ids, `benchmark`, main.py / serious_benchmark.py shims ----
ROOT = Path(__file__).resolve().parent.parent
ONE_ITER = ["--iterations", "1", *SMALL[2:], "--num-workers", "0"]


def test_resolve_env_gymnasium_ids():
    from ssm_metarl_ray.envs import GYM_IDS, resolve_env

    assert resolve_env("cartpole-physics") == ("cartpole-physics", None)
    assert resolve_env("CartPole-v0", "--env") == ("cartpole-physics",
                                                   "--env CartPole-v0 runs the task family cartpole-physics")
    for family, gym_id in GYM_IDS.items():
        assert resolve_env(gym_id)[0] == family
    bad_ids = {"HalfCheetah-v5": ("halfcheetah-vel", "halfcheetah-dir"), "Ant-v5": ("ant-dir", "ant-goal"),
               "moon-lander": ("'moon-lander'", "CartPole-v*")}
    for bad, needles in bad_ids.items():
        with pytest.raises(ValueError) as exc:
            resolve_env(bad)
        assert all(n in str(exc.value) for n in needles)


def test_benchmark_with_the_seed_flags_writes_its_result(tmp_path):
    out = tmp_path / "bench"
    r = cli("benchmark", "--task", "halfcheetah-vel", "--method", "ssm", "--adaptation_mode", "hybrid",
            "--epochs", "50", "--buffer_size", "20000", "--experience_weight", "0.1", "--smoke", "--quiet",
            "--output-dir", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "benchmark.json").read_text())
    assert (doc["task"], doc["method"], doc["adaptation_mode"]) == ("halfcheetah-vel", "ssm", "hybrid")
    assert doc["epochs"] == 1  # --smoke: one meta-iteration whatever --epochs says
    adapt = doc["config"]["adapt"]
    assert adapt["buffer_size"] == 20000 and adapt["experience_weight"] == 0.1
    assert doc["env_steps"] > 0 and doc["wall_clock_s"]["total"] > 0
    assert set(doc["held_out_return"]) == {"standard", "hybrid"}  # hybrid is compared with standard
    assert all(len(m["mean"]) == 2 for m in doc["held_out_return"].values())  # before + after 1 step
    assert len(doc["hybrid_minus_standard"]) == 2 and (out / "metrics.json").is_file()


@pytest.mark.parametrize("args, needle", [
    (["train", "--env", "HalfCheetah-v5"], "--env 'HalfCheetah-v5'"),
    (["train", "--env_name", "HalfCheetah-v5", "--preset", "maml2017"], "--env 'HalfCheetah-v5'"),
    (["benchmark", "--task", "HalfCheetah-v5", "--smoke"], "--task 'HalfCheetah-v5'"),
    (["benchmark", "--task", "navigation-2d", "--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["benchmark", "--task", "navigation-2d", "--method", "rnn"], "'rnn'"),
    (["benchmark", "--task", "navigation-2d", "--adaptation_mode", "both"], "'both'"),
    (["benchmark", "--task", "moon-lander"], "unknown --task 'moon-lander'"),
    (["benchmark", "--task", "CartPole-v1", "--experience_weight", "2"], "--experience-weight must be in"),
    (["benchmark", "--task", "navigation-2d", "--num-workers", "-1"], "--num-workers"),
    (["benchmark", "--smoke"], "--task"),
])
def test_gymnasium_id_and_benchmark_bad_values_one_line_exit_2(tmp_path, capsys, args, needle):
    from ssm_metarl_ray.cli import main

    out = tmp_path / "never"
    assert main([*args, "--output-dir", str(out)]) == 2  # in-process: argument errors only, no training
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    if "HalfCheetah-v5" in needle:  # an ambiguous id lists the families it could mean
        assert "choose one: halfcheetah-vel, halfcheetah-dir" in err
    assert not out.exists()


def test_serious_benchmark_shim_reports_bad_values(tmp_path):
    out = tmp_path / "never"
    seed_flags = ["--task", "HalfCheetah-v5", "--method", "ssm", "--epochs", "50"]
    shim = [sys.executable, "experiments/serious_benchmark.py"]
    r = subprocess.run([*shim, *seed_flags, "--output-dir", str(out)], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "halfcheetah-vel, halfcheetah-dir" in r.stderr and not out.exists()


def test_seed_main_py_runs_train_and_cartpole_v1_runs_cartpole_physics(tmp_path):
    """``python main.py`` is ``ssm-metarl train``; ``--env_name CartPole-v1`` runs cartpole-physics."""
    out = tmp_path / "m"
    seed_flags = ["--env_name", "CartPole-v1", "--adaptation_mode", "hybrid", "--num_epochs", "1",
                  "--buffer_size", "5000", "--experience_weight", "0.2"]
    r = subprocess.run([sys.executable, "main.py", *seed_flags, *ONE_ITER[2:], "--output-dir", str(out)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    assert cfg["env"] == "cartpole-physics" and cfg["iterations"] == 1 and cfg["adapt"]["buffer_size"] == 5000
    assert cfg["adapt"]["adaptation_mode"] == "hybrid"
    assert r.stderr.count("ssm-metarl: --env CartPole-v1 runs the task family cartpole-physics\n") == 1


def _config(*argv):
    from ssm_metarl_ray.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_every_config_field_has_a_train_flag_with_its_comment_as_help():
    """The train flags are generated from the config dataclasses: each field (but the one --adaptation-mode
    sets) has one, its help is the field's comment in config.py, and setting it reaches the config."""
    from ssm_metarl_ray.cli import build_parser, flag_of, train_fields
    from ssm_metarl_ray.config import ExperimentConfig, flat_items

    fields = dict(flat_items(ExperimentConfig()))
    assert set(fields) - set(train_fields()) == {"adapt.adaptation_mode"}
    help_text = " ".join(build_parser().train_parser.format_help().split())
    assert "width H of the core and of the encoder output; default: 64" in help_text
    assert "TRPO: conjugate-gradient iterations; default: 10" in help_text
    changed = {"meta.trpo_cg_iters": ("7", 7), "adapt.clip_eps": ("0.3", 0.3), "meta.gamma": ("0.9", 0.9),
               "model.init_log_std": ("-0.5", -0.5), "adapt.adapt_lr_decay": ("0.25", 0.25)}
    cfg = dict(flat_items(_config(*[a for f, (v, _) in changed.items() for a in (flag_of(f), v)])))
    assert {f: cfg[f] for f in changed} == {f: x for f, (_, x) in changed.items()}
    assert not _config("--no-critic-detached").model.critic_detached


def test_dependent_defaults_and_precedence():
    """Unset fields take the defaults that depend on others (config.derive); a preset sits under the flags
    given: navigation-2d's maml2017 preset also sets its test-time step decay and test batch unit."""
    assert _config("--model", "mlp").meta.inner_lr == 0.1 and _config("--model", "mlp").adapt.adapt_lr == 0.1
    assert _config("--inner-lr", "0.3").adapt.adapt_lr == 0.3
    assert _config("--inner-lr", "0.3", "--adapt-lr", "0.2").adapt.adapt_lr == 0.2
    assert _config("--baseline", "lagged").adapt.baseline == "lagged"
    assert _config("--baseline", "lagged", "--adapt-baseline", "fit").adapt.baseline == "fit"
    ic = _config("--method", "in-context", "--model", "gru", "--gae-lambda", "0.9")
    assert (ic.meta.value_coef, ic.meta.episodes_per_trial, ic.meta.gae_lambda) == (0.5, 2, 0.9)
    assert ic.adapt.episodes_per_step == 4  # follows the in-context episodes_per_task
    p = _config("--preset", "maml2017", "--meta-batch-size", "3")
    assert (p.meta.meta_batch_size, p.meta.episodes_per_task, p.adapt.adapt_lr_decay) == (3, 20, 0.5)
    assert (p.meta.batch_unit, p.adapt.batch_unit) == ("episodes", "steps")
    assert _config("--batch-unit", "steps").adapt.batch_unit == "steps"  # follows meta.batch_unit
    assert _config("--batch-unit", "steps", "--adapt-batch-unit", "episodes").adapt.batch_unit == "episodes"
    assert _config("--preset", "maml2017", "--adapt-batch-unit", "episodes").adapt.batch_unit == "episodes"


def test_sweeps_build_configs_through_the_same_derive():
    from ssm_metarl_ray.config import build_experiment_config

    cfg = build_experiment_config({"model.kind": "mlp", "meta.method": "in-context"}, {"seed": 2})
    assert (cfg.meta.inner_lr, cfg.adapt.adapt_lr, cfg.meta.value_coef, cfg.meta.outer_lr) == (0.1, 0.1, 0.5, 1e-3)


def test_no_worker_gradients_flag_reaches_the_runtime_config():
    from ssm_metarl_ray.cli import build_parser, runtime_from_args

    assert runtime_from_args(build_parser().parse_args(["train"])).worker_gradients is True
    assert runtime_from_args(build_parser().parse_args(["train", "--no-worker-gradients"])).worker_gradients is False
