"""Named presets: training/evaluation protocols as config overrides, one per task family.

``maml2017``: the settings of Finn et al. 2017 (MAML-TRPO), from the paper and its training/test scripts:
meta-batch (tasks per meta-iteration), trajectories per task, inner step size (also the first test-time
step; every later one at half of it, as rllab's VPG with ``init_learning_rate`` ran MAML's tests), 1 inner
step, 40 held-out test tasks, 0..3 adaptation steps of 4,000 env steps each (20 trajectories of 200 steps;
40 of 100 on navigation-2d, ``test_maml_point.py``), and the number of meta-iterations behind the
published checkpoints. Choices that are ours, measured on navigation-2d
(``benchmarks/README.md``): the meta-update is the clipped surrogate with 5 Adam steps (ProMP) rather than
MAML's TRPO step (``--outer-optimizer trpo`` gives that, max KL 0.01; it reached a worse 1-step return
in more wall-clock), a tanh 64x64 core, a training set of 1,000 seeded tasks standing in for fresh
draws every iteration. On navigation-2d the meta-training goes through the test protocol's first two
steps (2 inner steps at 0.5 and 0.25 with the multi-step loss, 80 iterations: 7.8e6 env steps, under
MAML's 8e6) and test steps halve (0.5, 0.25, 0.125) in batches of 4,000 env steps of whole episodes as
MAML's test script collects them: -3.5 after two steps over 3 seeds where one inner step with the test
schedule 0.5, 0.125 gave -5.4 (a fixed second step suits either near or far goals, not both). The
SSM on navigation-2d has its own settings on top (``_MAML2017_MODEL``, measured: ANIL, MLP heads that read the
observation, a faster outer step), with which it is at least as good as the MLP after one, two and three
steps. The HalfCheetah families have the same settings on MAML's own simulator settings (``halfcheetah-dir-rllab``,
``halfcheetah-vel-rllab``: rllab's dt 0.01 s and 20-d observation; ``envs/half_cheetah.py``); there the MLP
gets MAML's TRPO meta-step and ReLU 100x100 policy, on ``halfcheetah-dir-rllab`` with the further settings that
measured best (``_MAML2017_MODEL``); the SSM on ``halfcheetah-dir-rllab`` gets the same meta-step with its
navigation-2d ANIL heads (351.4 after one step over 4 seeds, MAML 293.2; the same SSM trained multi-task, with no
inner step, does better: its core reads the direction from the rewards, benchmarks/README.md).

``in-context``: our protocol for in-context meta-RL (recurrent PPO over 2-episode trials, 10 tasks x 4
trials per iteration, 40 held-out tasks) at a tenth of MAML's budget per family or less, with the settings
chosen by measurement for the SSM (``benchmarks/README.md``, "In-context meta-RL"): Adam step size and
epochs, MLP actor/critic heads, the task-inference loss's weight (which on halfcheetah-dir also makes a
task curriculum unnecessary), reward normalisation on MuJoCo. It sets ``meta.method`` to ``in-context``.
"""

from __future__ import annotations

from dataclasses import replace

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs.registry import FAMILIES

# family -> (meta_batch_size, training trajectories per task, inner_lr, iterations, test trajectories per step)
_MAML2017 = {
    # maml_trpo_point.py: fbs20 mbs20 flr 0.5, 8e6 env steps; test_maml_point.py: batch 4000 = 40 x 100 steps
    "navigation-2d": (20, 20, 0.5, 80, 40),
    "halfcheetah-dir": (40, 20, 0.1, 100, 20),  # checkpoint itr_100 (fbs20): 3.2e7 env steps
    "halfcheetah-vel": (40, 10, 0.1, 475, 20),  # checkpoint itr_475 (fbs10; the text says 20): 7.6e7
    "ant-dir": (40, 40, 0.1, 575, 40),  # checkpoint itr_575 (fbs40), 40 trajectories per test step
}
_MAML2017.update({f.name: _MAML2017[f.tasks_of] for f in FAMILIES.values()  # the -rllab forms: the same
                  if f.tasks_of in _MAML2017})                           # protocol on other simulator settings

# in-context: dotted config fields per family (training env steps: iterations x 10 tasks x 4 trials x 2
# episodes x horizon: navigation-2d <= 1e6 (episodes end at the goal), halfcheetah-vel 7.6e6, -dir 3.2e6)
_IN_CONTEXT_COMMON: dict[str, object] = {
    "meta.method": "in-context", "meta.meta_batch_size": 10, "meta.episodes_per_task": 4,
    "meta.episodes_per_trial": 2, "meta.value_coef": 0.5, "meta.gae_lambda": 0.95, "meta.ppo_minibatches": 4,
    "model.head_hidden": 64, "num_test_tasks": 40}
_IN_CONTEXT: dict[str, dict[str, object]] = {
    "navigation-2d": {"iterations": 125, "meta.outer_lr": 1e-4, "meta.outer_steps": 10,
                      "meta.task_inference_coef": 10.0},
    "halfcheetah-vel": {"iterations": 475, "meta.outer_lr": 3e-4, "meta.outer_steps": 8,
                        "meta.normalize_rewards": True, "meta.task_inference_coef": 3.0},
    "halfcheetah-dir": {"iterations": 200, "meta.outer_lr": 3e-4, "meta.outer_steps": 8,
                        "meta.normalize_rewards": True, "meta.task_inference_coef": 3.0},
}

PRESETS: dict[str, dict] = {"maml2017": _MAML2017, "in-context": _IN_CONTEXT}
# maml2017 settings beyond the table, per family (dotted fields). Test-time steps after the first: MAML's
# test scripts run every later step at half the first (schedule "first", decay 0.5, every family's
# default); ours on navigation-2d halve every step ("geometric", 0.5), as its meta-training through the
# first two test steps does (benchmarks/README.md, "with MAML's own second step"), on rllab batches
_MAML2017_EXTRA: dict[str, dict[str, object]] = {
    "navigation-2d": {"meta.inner_steps": 2, "meta.multi_step_loss": True, "meta.inner_lr_decay": 0.5,
                      "adapt.adapt_lr_schedule": "geometric", "adapt.batch_unit": "steps"}}
# the meta-step measured best on halfcheetah-dir-rllab, for the MLP and the SSM: TRPO, max KL 0.04, GAE 0.97
_CHEETAH_DIR_META_STEP: dict[str, object] = {"meta.outer_optimizer": "trpo", "meta.trpo_max_kl": 0.04,
                                             "meta.gae_lambda": 0.97}
# maml2017 settings of one model on one family, over the family's (chosen by measurement, benchmarks/README.md
# "A faster outer step"): the SSM on navigation-2d adapts only its heads (ANIL), MLP heads that read the
# observation over a core of the action/reward history, every inner step 0.05 (test steps halving from it),
# Adam at twice the preset's step with ten epochs: -34.3 / -4.6 / -2.7 / -2.4 over 3 seeds (the MLP's preset
# -39.0 / -10.0 / -3.5 / -2.8)
_MAML2017_MODEL: dict[tuple[str, str], dict[str, object]] = {
    ("navigation-2d", "ssm"): {"model.head_hidden": 64, "model.head_obs": True, "model.history_only": True,
                               "meta.inner_params": "heads", "adapt.adapt_params": "heads", "meta.inner_lr": 0.05,
                               "adapt.adapt_lr": 0.05, "meta.inner_lr_decay": 1.0, "meta.outer_lr": 0.006,
                               "meta.outer_steps": 10},
    # the MLP on MAML's cheetah settings: MAML's meta-step (TRPO) and policy (ReLU 100x100); on
    # halfcheetah-vel-rllab -75.7 after one step over 2 seeds (MAML -78.6); on halfcheetah-dir-rllab also rllab's
    # policy as built (Xavier init, the observation alone), the trust region's metric through the inner step
    # (exact Fisher), max KL 0.04 and GAE lambda 0.97 (benchmarks/README.md, "GAE lambda 0.97 in training")
    ("halfcheetah-vel-rllab", "mlp"): {"meta.outer_optimizer": "trpo", "model.activation": "relu",
                                       "model.hidden_size": 100},
    ("halfcheetah-dir-rllab", "mlp"): {**_CHEETAH_DIR_META_STEP, "meta.trpo_exact_fisher": True,
                                       "model.activation": "relu", "model.hidden_size": 100,
                                       "model.observation_only": True, "model.mlp_init": "xavier"},
    # the SSM there: the MLP's meta-step (with the adapted policies' Fisher) and navigation-2d's ANIL heads over
    # a history core, MAML's step 0.1: 351.4 after one step over 4 seeds (MAML 293.2; benchmarks/README.md,
    # "The SSM policy on the same protocol"; a multi-task SSM does better: "The multi-task SSM on the same protocol")
    ("halfcheetah-dir-rllab", "ssm"): {**_CHEETAH_DIR_META_STEP, "model.head_hidden": 64, "model.head_obs": True,
                                       "model.history_only": True, "meta.inner_params": "heads",
                                       "adapt.adapt_params": "heads"}}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def preset_families(name: str) -> tuple[str, ...]:
    return tuple(PRESETS[name])


def preset_overrides(name: str, env: str, model: str | None = None) -> dict[str, dict]:
    """``{"": top-level fields, "meta": ..., "adapt": ..., "model": ...}`` overrides of ``name`` for ``env``,
    with those for the ``model`` kind on ``env`` (:func:`model_preset_fields`) if given.

    Raises ``ValueError`` naming the allowed presets or families.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    if env not in PRESETS[name]:
        raise ValueError(f"preset {name!r} has no settings for {env!r}; it covers: {', '.join(PRESETS[name])}")
    if name == "in-context":
        return _nest({**_IN_CONTEXT_COMMON, **_IN_CONTEXT[env]}, {"": {"env": env}})
    meta_batch, episodes, lr, iterations, test_episodes = PRESETS[name][env]
    base = {"": {"env": env, "iterations": iterations, "num_train_tasks": 1000, "num_test_tasks": 40},
            "meta": {"meta_batch_size": meta_batch, "episodes_per_task": episodes, "inner_lr": lr,
                     "inner_steps": 1, "outer_optimizer": "clipped", "outer_steps": 5, "trpo_max_kl": 0.01},
            "adapt": {"adapt_lr": lr, "adapt_lr_schedule": "first", "adapt_lr_decay": 0.5, "adapt_steps": 3,
                      "episodes_per_step": test_episodes}}
    return _nest({**_MAML2017_EXTRA.get(env, {}), **model_preset_fields(name, env, model)}, base)


def model_preset_fields(name: str, env: str, model: str | None) -> dict[str, object]:
    """The dotted fields that preset ``name`` sets for the ``model`` kind on ``env`` beyond the family's ({}:
    none; ``_MAML2017_MODEL`` lists the model kinds and families that have their own)."""
    return dict(_MAML2017_MODEL.get((env, model or ""), {})) if name == "maml2017" else {}


def _nest(dotted: dict[str, object], into: dict[str, dict]) -> dict[str, dict]:
    """A copy of ``into`` (``{"": top-level fields, "meta": ...}``) with the ``dotted`` fields added."""
    nested: dict[str, dict] = {k: dict(v) for k, v in into.items()}
    for field, value in dotted.items():
        sub, _, short = field.rpartition(".")
        nested.setdefault(sub, {})[short] = value
    return nested


def apply_preset(cfg: ExperimentConfig, name: str, per_model: bool = True) -> ExperimentConfig:
    """``cfg`` with the preset's settings for ``cfg.env`` and, with ``per_model``, for ``cfg.model.kind`` on it
    (everything else kept)."""
    o = preset_overrides(name, cfg.env, cfg.model.kind if per_model else None)
    return replace(cfg, **o[""], meta=replace(cfg.meta, **o.get("meta", {})),
                   adapt=replace(cfg.adapt, **o.get("adapt", {})), model=replace(cfg.model, **o.get("model", {})))
