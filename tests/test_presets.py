"""``maml2017`` presets: MAML 2017's published settings per family, applied on top of a config."""

import pytest

from ssm_metarl_ray.config import ExperimentConfig, ModelConfig
from ssm_metarl_ray.presets import apply_preset, preset_families


@pytest.mark.parametrize("env, meta_batch, episodes, lr, iterations, test_episodes", [
    ("navigation-2d", 20, 20, 0.5, 100, 40),
    ("halfcheetah-dir", 40, 20, 0.1, 100, 20),
    ("halfcheetah-vel", 40, 10, 0.1, 475, 20),
    ("ant-dir", 40, 40, 0.1, 575, 40),
])
def test_maml2017_settings(env, meta_batch, episodes, lr, iterations, test_episodes):
    cfg = apply_preset(ExperimentConfig(env=env, model=ModelConfig(kind="mlp"), seed=3), "maml2017")
    assert (cfg.meta.meta_batch_size, cfg.meta.episodes_per_task, cfg.meta.inner_lr, cfg.iterations) == (
        meta_batch, episodes, lr, iterations)
    decay = 0.25 if env == "navigation-2d" else 0.5  # measured on navigation-2d; MAML halves
    assert cfg.adapt.adapt_lr == lr and cfg.adapt.adapt_lr_decay == decay and cfg.adapt.adapt_steps == 3
    assert cfg.adapt.episodes_per_step == test_episodes and cfg.num_test_tasks == 40 and cfg.meta.inner_steps == 1
    assert cfg.model.kind == "mlp" and cfg.seed == 3  # the rest is kept
    # budget: meta-batch x trajectories x horizon x (pre + post) x iterations, as MAML's checkpoints
    horizon = 100 if env == "navigation-2d" else 200
    assert meta_batch * episodes * horizon * 2 * iterations == {
        "navigation-2d": 8e6, "halfcheetah-dir": 3.2e7, "halfcheetah-vel": 7.6e7, "ant-dir": 3.68e8}[env]


def test_unknown_preset_or_family_names_the_choices():
    with pytest.raises(ValueError, match="allowed: maml2017"):
        apply_preset(ExperimentConfig(), "maml2018")
    with pytest.raises(ValueError, match="navigation-2d"):
        apply_preset(ExperimentConfig(env="ant-goal"), "maml2017")
    assert "cartpole-physics" not in preset_families("maml2017")
