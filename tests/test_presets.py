"""Presets: ``maml2017`` (MAML 2017's published settings per family) and ``in-context`` (our protocol), applied
on top of a config, in the CLI and in benchmarks/learning.py."""

import json
from pathlib import Path

import pytest

from ssm_metarl_ray.config import ExperimentConfig, ModelConfig
from ssm_metarl_ray.presets import apply_preset, preset_families


@pytest.mark.parametrize("env, meta_batch, episodes, lr, iterations, test_episodes", [
    ("navigation-2d", 20, 20, 0.5, 80, 40),
    ("halfcheetah-dir", 40, 20, 0.1, 100, 20),
    ("halfcheetah-vel", 40, 10, 0.1, 475, 20),
    ("ant-dir", 40, 40, 0.1, 575, 40),
])
def test_maml2017_settings(env, meta_batch, episodes, lr, iterations, test_episodes):
    cfg = apply_preset(ExperimentConfig(env=env, model=ModelConfig(kind="mlp"), seed=3), "maml2017")
    assert (cfg.meta.meta_batch_size, cfg.meta.episodes_per_task, cfg.meta.inner_lr, cfg.iterations) == (
        meta_batch, episodes, lr, iterations)
    nav = env == "navigation-2d"
    # MAML's tests run every step after the first at half of it; ours on navigation-2d halves every step, as
    # its meta-training's two inner steps (multi-step loss) do; its test batches count env steps, as MAML's
    schedule = ("geometric", 0.5) if nav else ("first", 0.5)
    assert (cfg.adapt.adapt_lr_schedule, cfg.adapt.adapt_lr_decay) == schedule
    assert cfg.adapt.adapt_lr == lr and cfg.adapt.adapt_steps == 3
    assert cfg.adapt.episodes_per_step == test_episodes and cfg.num_test_tasks == 40
    assert (cfg.meta.inner_steps, cfg.meta.multi_step_loss, cfg.meta.inner_lr_decay) == (
        (2, True, 0.5) if nav else (1, False, 1.0))
    assert (cfg.meta.batch_unit, cfg.adapt.batch_unit) == ("episodes", "steps" if nav else "episodes")
    assert cfg.model.kind == "mlp" and cfg.seed == 3  # the rest is kept
    # budget: meta-batch x trajectories x horizon x (inner steps + 1 batches) x iterations, as MAML's
    # checkpoints; on navigation-2d an upper bound (episodes end at the goal: 7.8e6 measured, under MAML's 8e6)
    horizon = 100 if nav else 200
    assert meta_batch * episodes * horizon * (cfg.meta.inner_steps + 1) * iterations == {
        "navigation-2d": 9.6e6, "halfcheetah-dir": 3.2e7, "halfcheetah-vel": 7.6e7, "ant-dir": 3.68e8}[env]


def test_unknown_preset_or_family_names_the_choices():
    with pytest.raises(ValueError, match="allowed: maml2017"):
        apply_preset(ExperimentConfig(), "maml2018")
    with pytest.raises(ValueError, match="navigation-2d"):
        apply_preset(ExperimentConfig(env="ant-goal"), "maml2017")
    assert "cartpole-physics" not in preset_families("maml2017")


def _learning_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "learning.py"
    spec = importlib.util.spec_from_file_location("bench_learning_presets", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _committed_config(env: str, result_name: str) -> ExperimentConfig:
    """The config of a committed learning result, ``benchmarks/results/learning/<env>/<result_name>``."""
    result = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "learning" / env / result_name
    return ExperimentConfig.from_dict(json.loads(result.read_text())["config"])


# the commands behind the in-context results in benchmarks/README.md that the preset stands for
_MEASURED = {
    "navigation-2d": "--iterations 125 --modes in-context --outer-lr 1e-4 --outer-steps 10 --task-inference-coef 10 "
                     "--head-hidden 64",
    "halfcheetah-vel": "--iterations 475 --modes in-context --outer-lr 3e-4 --head-hidden 64 --outer-steps 8 "
                       "--normalize-rewards --task-inference-coef 3",
    "halfcheetah-dir": "--iterations 200 --modes in-context --outer-lr 3e-4 --head-hidden 64 --outer-steps 8 "
                       "--normalize-rewards --task-inference-coef 3",
}


@pytest.mark.parametrize("env", sorted(_MEASURED))
def test_in_context_preset_is_the_measured_command_in_the_script_and_the_cli(env):
    """``--preset in-context`` gives, in benchmarks/learning.py, the config of the command measured there, and
    ``ssm-metarl train --preset in-context`` the same method, model and training settings; flags given win."""
    from ssm_metarl_ray.cli import build_parser, config_from_args

    bench = _learning_script()
    base = ["run", "--env", env, "--method", "in-context", "--model", "ssm", "--seed", "1"]
    measured = bench.parse_args([*base, *_MEASURED[env].split()])
    preset = bench.parse_args(["run", "--env", env, "--model", "ssm", "--seed", "1", "--preset", "in-context"])
    assert preset.modes == ["in-context"] and preset.tag == "preset" and preset.method == "in-context"
    assert bench.build_config(preset) == bench.build_config(measured)
    cli = config_from_args(build_parser().parse_args(["train", "--env", env, "--preset", "in-context"]))
    script = bench.build_config(preset)
    assert cli.meta == script.meta and cli.model == script.model
    assert (cli.iterations, cli.num_test_tasks, cli.num_train_tasks) == (
        script.iterations, script.num_test_tasks, script.num_train_tasks)
    assert apply_preset(ExperimentConfig(env=env), "in-context").meta == script.meta
    # explicit flags override the preset, in both
    over = bench.parse_args(["run", "--env", env, "--preset", "in-context", "--outer-lr", "5e-4", "--tag", "x"])
    assert bench.build_config(over).meta.outer_lr == 5e-4 and over.tag == "x"
    cli_over = config_from_args(build_parser().parse_args(
        ["train", "--env", env, "--preset", "in-context", "--outer-lr", "5e-4", "--model", "gru"]))
    assert cli_over.meta.outer_lr == 5e-4 and cli_over.model.kind == "gru" and cli_over.model.head_hidden == 64


def test_in_context_preset_names_its_families():
    with pytest.raises(ValueError, match="halfcheetah-dir"):
        apply_preset(ExperimentConfig(env="ant-goal"), "in-context")
    with pytest.raises(SystemExit, match="in-context"):
        _learning_script().parse_args(["run", "--env", "ant-goal", "--preset", "in-context"])


@pytest.mark.parametrize("env, model", [("navigation-2d", "mlp"), ("halfcheetah-dir-rllab", "mlp"),
                                        ("navigation-2d", "ssm"), ("halfcheetah-dir-rllab", "ssm")])
def test_maml2017_preset_is_the_same_config_in_the_script_and_the_cli(env, model):
    """``benchmarks/learning.py run --preset maml2017`` (the committed parity runs) and ``ssm-metarl train
    --preset maml2017`` build the same training and test settings, the per-model ones included (the SSM on
    navigation-2d); the script's flags still win."""
    from ssm_metarl_ray.cli import build_parser, config_from_args

    bench = _learning_script()
    script = bench.build_config(bench.parse_args(["run", "--env", env, "--model", model, "--preset", "maml2017"]))
    cli = config_from_args(build_parser().parse_args(["train", "--env", env, "--model", model, "--preset",
                                                      "maml2017"]))
    assert (script.meta, script.adapt, script.model) == (cli.meta, cli.adapt, cli.model)
    assert (script.iterations, script.num_test_tasks, script.num_train_tasks) == (
        cli.iterations, cli.num_test_tasks, cli.num_train_tasks)
    over = bench.build_config(bench.parse_args(["run", "--env", env, "--preset", "maml2017", "--inner-steps", "1",
                                                "--no-multi-step-loss", "--test-batch-unit", "episodes"]))
    assert over.meta.inner_steps == 1 and not over.meta.multi_step_loss and over.adapt.batch_unit == "episodes"
    # MAML's Monte-Carlo advantages unless --gae-lambda (the MLP and SSM on halfcheetah-dir-rllab: measured best)
    assert script.meta.gae_lambda == (0.97 if env == "halfcheetah-dir-rllab" else 1.0)
    gae = bench.build_config(bench.parse_args(["run", "--env", env, "--preset", "maml2017", "--gae-lambda", "0.97"]))
    assert gae.meta.gae_lambda == 0.97


def test_maml2017_ssm_on_navigation_is_the_measured_command():
    """The maml2017 preset's SSM settings on navigation-2d are those of the committed SSM runs
    (benchmarks/README.md, "A faster outer step"): the preset alone gives the config of the run made with
    the whole command, in the script and in the CLI (default model: the SSM) and ``apply_preset``; a flag
    given still wins, and other models and families get none of them."""
    from ssm_metarl_ray.cli import build_parser, config_from_args

    bench = _learning_script()
    measured = ("--head-hidden 64 --inner-params heads --lr 0.05 --inner-lr-decay 1.0 --head-obs --history-only "
                "--outer-lr 0.006 --outer-steps 10").split()
    base = ["run", "--env", "navigation-2d", "--model", "ssm", "--preset", "maml2017", "--modes", "standard"]
    preset = bench.build_config(bench.parse_args(base))
    assert preset == bench.build_config(bench.parse_args([*base, *measured]))
    assert preset == _committed_config("navigation-2d", "maml-ssm-ssm-recipe-s0.json")
    m, meta, adapt = preset.model, preset.meta, preset.adapt
    assert (m.head_hidden, m.head_obs, m.history_only, meta.inner_params, adapt.adapt_params) == (
        64, True, True, "heads", "heads")
    assert (meta.inner_lr, meta.inner_lr_decay, adapt.adapt_lr, adapt.adapt_lr_decay, meta.outer_lr,
            meta.outer_steps) == (0.05, 1.0, 0.05, 0.5, 0.006, 10)
    cli = config_from_args(build_parser().parse_args(["train", "--env", "navigation-2d", "--preset", "maml2017"]))
    assert (cli.model, cli.meta, cli.adapt) == (preset.model, preset.meta, preset.adapt)
    assert apply_preset(ExperimentConfig(env="navigation-2d"), "maml2017").meta == preset.meta
    assert bench.build_config(bench.parse_args([*base, "--outer-steps", "5", "--lr", "0.1"])).meta.outer_steps == 5
    assert config_from_args(build_parser().parse_args(
        ["train", "--env", "navigation-2d", "--preset", "maml2017", "--outer-steps", "5"])).meta.outer_steps == 5
    for env, kind in (("navigation-2d", "mlp"), ("navigation-2d", "gru"), ("halfcheetah-dir", "ssm")):
        other = apply_preset(ExperimentConfig(env=env, model=ModelConfig(kind=kind)), "maml2017")
        assert (other.meta.outer_steps, other.meta.inner_params, other.model.head_obs) == (5, "all", False)


# the commands behind the committed MLP runs on MAML's cheetah settings that maml2017's per-model settings stand for
_CHEETAH_MEASURED = {
    "halfcheetah-dir-rllab": ("--outer-optimizer trpo --exact-fisher --max-kl 0.04 --activation relu --hidden-size 100 "
                              "--observation-only --mlp-init xavier --gae-lambda 0.97",
                              "maml-mlp-trpo-exact-relu100-rllabpol-kl0.04-gae0.97-s2.json", 2),
    "halfcheetah-vel-rllab": ("--outer-optimizer trpo --activation relu --hidden-size 100",
                              "maml-mlp-trpo-relu100-klfix-s0.json", 0),
}


@pytest.mark.parametrize("env", sorted(_CHEETAH_MEASURED))
def test_maml2017_mlp_on_rllab_cheetah_is_the_measured_command(env):
    """On MAML's cheetah settings the maml2017 preset gives the MLP the config of its best committed runs (TRPO,
    ReLU 100x100, and on halfcheetah-dir-rllab rllab's policy, the exact Fisher, max KL 0.04, GAE 0.97): the
    preset alone equals the whole command and the result file's config, in the script, the CLI and
    ``apply_preset``; flags given still win, and other models get none of it."""
    from ssm_metarl_ray.cli import build_parser, config_from_args

    bench = _learning_script()
    flags, result_name, seed = _CHEETAH_MEASURED[env]
    base = ["run", "--env", env, "--model", "mlp", "--preset", "maml2017", "--modes", "standard", "--seed", str(seed)]
    preset = bench.build_config(bench.parse_args(base))
    assert preset == bench.build_config(bench.parse_args([*base, *flags.split()]))
    assert preset == _committed_config(env, result_name)
    assert (preset.meta.outer_optimizer, preset.model.activation, preset.model.hidden_size) == ("trpo", "relu", 100)
    cli = config_from_args(build_parser().parse_args(["train", "--env", env, "--model", "mlp", "--preset", "maml2017"]))
    assert (cli.model, cli.meta, cli.adapt) == (preset.model, preset.meta, preset.adapt)
    mlp = ExperimentConfig(env=env, model=ModelConfig(kind="mlp"))
    assert apply_preset(mlp, "maml2017").meta == preset.meta
    over = bench.build_config(bench.parse_args([*base, "--outer-optimizer", "clipped", "--activation", "tanh",
                                                "--no-exact-fisher", "--no-observation-only", "--gae-lambda", "1"]))
    assert (over.meta.outer_optimizer, over.model.activation, over.meta.trpo_exact_fisher,
            over.model.observation_only, over.meta.gae_lambda) == ("clipped", "tanh", False, False, 1.0)
    cli_over = config_from_args(build_parser().parse_args(
        ["train", "--env", env, "--model", "mlp", "--preset", "maml2017", "--outer-optimizer", "clipped"]))
    assert cli_over.meta.outer_optimizer == "clipped"
    other = apply_preset(ExperimentConfig(env=env, model=ModelConfig(kind="gru")), "maml2017")
    assert (other.meta.outer_optimizer, other.meta.gae_lambda, other.model.observation_only) == ("clipped", 1.0, False)


def test_maml2017_ssm_on_rllab_cheetah_dir_is_the_measured_command():
    """On halfcheetah-dir-rllab the maml2017 preset gives the SSM the config of its four committed runs
    (benchmarks/README.md, "The SSM policy on the same protocol": the MLP's TRPO meta-step with max KL 0.04 and
    GAE 0.97, ANIL heads over a history core as on navigation-2d, MAML's step 0.1): the preset alone equals
    the whole command and the result file's config, in the script, the CLI (default model) and
    ``apply_preset``; flags still win; the MLP keeps its own settings and other families get none of these."""
    from ssm_metarl_ray.cli import build_parser, config_from_args

    env = "halfcheetah-dir-rllab"
    bench = _learning_script()
    measured = ("--outer-optimizer trpo --max-kl 0.04 --gae-lambda 0.97 --head-hidden 64 --head-obs --history-only "
                "--inner-params heads").split()
    base = ["run", "--env", env, "--model", "ssm", "--preset", "maml2017", "--modes", "standard", "--seed", "3"]
    preset = bench.build_config(bench.parse_args(base))
    assert preset == bench.build_config(bench.parse_args([*base, *measured]))
    assert preset == _committed_config(env, "maml-ssm-trpo-kl0.04-gae0.97-anil-s3.json")
    m, meta, adapt = preset.model, preset.meta, preset.adapt
    assert (meta.outer_optimizer, meta.trpo_max_kl, meta.trpo_exact_fisher, meta.gae_lambda) == ("trpo", 0.04, False,
                                                                                                0.97)
    assert (m.head_hidden, m.head_obs, m.history_only, meta.inner_params, adapt.adapt_params) == (
        64, True, True, "heads", "heads")
    assert (meta.inner_lr, adapt.adapt_lr, meta.meta_batch_size, preset.iterations) == (0.1, 0.1, 40, 100)
    cli = config_from_args(build_parser().parse_args(["train", "--env", env, "--preset", "maml2017"]))
    assert (cli.model, cli.meta, cli.adapt) == (preset.model, preset.meta, preset.adapt)
    assert apply_preset(ExperimentConfig(env=env), "maml2017").meta == preset.meta
    over = bench.build_config(bench.parse_args([*base, "--outer-optimizer", "clipped", "--gae-lambda", "1",
                                                "--inner-params", "all"]))
    assert (over.meta.outer_optimizer, over.meta.gae_lambda, over.meta.inner_params) == ("clipped", 1.0, "all")
    mlp = apply_preset(ExperimentConfig(env=env, model=ModelConfig(kind="mlp")), "maml2017")
    assert (mlp.meta.trpo_exact_fisher, mlp.meta.inner_params, mlp.model.head_obs) == (True, "all", False)
    for family in ("halfcheetah-dir", "halfcheetah-vel-rllab"):
        other = apply_preset(ExperimentConfig(env=family, model=ModelConfig(kind="ssm")), "maml2017")
        assert (other.meta.outer_optimizer, other.meta.inner_params, other.model.head_obs) == ("clipped", "all", False)
