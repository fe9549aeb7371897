"""RolloutWorker batches, replay conversions, adapters (standard and hybrid) on every task family."""

import numpy as np
import pytest
import torch

from ssm_metarl_ray.adapters import make_adapter
from ssm_metarl_ray.adapters.hybrid import HybridAdapter
from ssm_metarl_ray.adapters.standard import StandardAdapter
from ssm_metarl_ray.config import AdaptConfig, ConfigError, ExperimentConfig, MetaConfig, ModelConfig
from ssm_metarl_ray.envs import make_env, task_splits
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.replay.convert import episodes_to_block, policy_inputs
from ssm_metarl_ray.rollout.worker import RolloutWorker

SMALL = ModelConfig(kind="ssm", hidden_size=16, num_layers=1, state_size=8)


def _worker(env="navigation-2d", model=SMALL, episodes=3):
    torch.manual_seed(0)
    return RolloutWorker(env, model, MetaConfig(episodes_per_task=episodes), num_envs=episodes, seed=0)


def _tasks(env="navigation-2d", n=3):
    return task_splits(make_env(env), n, 2, seed=0)


@pytest.mark.parametrize("env", ["navigation-2d", "cartpole-physics"])
def test_rebuilt_inputs_equal_what_the_policy_saw(env):
    w = _worker(env)
    batch = w.sample(_tasks(env)[0][0], 3)
    rebuilt = policy_inputs(batch.obs, batch.actions, batch.rewards, batch.dones, w.spec.discrete, w.spec.act_dim)
    m = batch.mask.astype(bool)
    np.testing.assert_allclose(rebuilt[m], batch.inputs[m], atol=1e-6)


@pytest.mark.parametrize("rows", [1, 3])
def test_rollout_log_probs_are_what_the_learner_recomputes(rows):
    """The log-probs a rollout records (PackedStep; at one row the SSM's fused small-batch layers) equal the
    learner's sequence forward over the same episodes (``Policy`` with the scan), up to float32 rounding."""
    from ssm_metarl_ray.algorithms.maml import action_log_prob, policy_params

    w = _worker(model=ModelConfig(kind="ssm", hidden_size=16, num_layers=2, state_size=8), episodes=rows)
    batch = w.sample(_tasks()[0][0], rows)
    ep = batch.to_torch(torch.float32)
    with torch.no_grad():
        logp = action_log_prob(w.policy, policy_params(w.policy), ep)
    m = ep.mask.bool()
    torch.testing.assert_close(logp[m], ep.logp[m], rtol=1e-4, atol=1e-4)


def test_sample_many_assigns_rows_to_tasks_and_stamps_version():
    w = _worker()
    w.set_weights(w.get_weights(), 7)
    train, _ = _tasks()
    batches = w.sample_many(train, 2)
    assert [b.task_index for b in batches] == [t.index for t in train]
    assert all(b.weights_version == 7 and b.rewards.shape == (2, 100) for b in batches)
    # navigation reward is minus the distance to the task's goal: check it against each row's task
    for b, t in zip(batches, train):
        goal = np.array([t.params["goal_x"], t.params["goal_y"]])
        pos = np.cumsum(np.clip(b.actions, -1, 1) * 0.1, axis=1)  # start at origin, action scale 0.1
        np.testing.assert_allclose(b.rewards[:, :50], -np.linalg.norm(pos - goal, axis=-1)[:, :50], atol=1e-4)


def test_terminated_episodes_are_masked_and_advantages_normalised():
    w = _worker("cartpole-physics", episodes=4)
    b = w.sample(_tasks("cartpole-physics")[0][0], 4)
    lengths = b.mask.sum(1)
    assert lengths.min() < 200  # a random policy drops the pole early
    assert np.all(b.rewards[b.mask == 0] == 0) and np.all(b.advantages[b.mask == 0] == 0)
    assert abs(b.advantages[b.mask > 0].mean()) < 1e-4
    assert np.all(b.dones[:, 0] == 1) and np.all(b.dones[:, 1:] == 0)


@pytest.mark.parametrize("grouped", [False, True])
def test_steps_batch_unit_collects_whole_episodes_up_to_rllabs_batch_size(grouped):
    """``meta.batch_unit`` steps (rllab's batch_size): whole episodes until each task's batch holds at least
    n x horizon env steps and no more (without its last episode it would be short: one-at-a-time
    collection stops there); the top-up rows are sampled with the task's own parameters."""
    from ssm_metarl_ray.algorithms.maml import action_log_prob, policy_params

    n, horizon = 2, 200
    torch.manual_seed(0)
    w = RolloutWorker("cartpole-physics", SMALL, MetaConfig(episodes_per_task=n, batch_unit="steps"), n, seed=0)
    train, _ = _tasks("cartpole-physics", 8)  # enough tasks that their rounds need different top-ups
    meta = policy_params(w.policy)
    params = [{k: v + 0.05 * i * torch.randn_like(v) for k, v in meta.items()} for i in range(len(train))]
    batches = w.sample_adapted(train, n, params) if grouped else w.sample_many(train, n)
    for i, (b, t) in enumerate(zip(batches, train)):
        lengths = b.mask.sum(1)
        assert b.task_index == t.index and len(lengths) > n  # a random policy drops the pole early
        assert lengths.sum() >= n * horizon > lengths[:-1].sum()
        assert np.all(b.dones[:, 0] == 1) and np.all(np.diff(b.mask, axis=1) <= 0)  # whole episodes, t = 0 on
        assert abs(b.advantages[b.mask > 0].mean()) < 1e-4  # baseline and normalisation over the whole batch
        ep = b.to_torch(torch.float32)
        with torch.no_grad():
            logp = action_log_prob(w.policy, params[i] if grouped else meta, ep)
        m = ep.mask.bool()
        torch.testing.assert_close(logp[m], ep.logp[m], rtol=1e-4, atol=1e-4)


def test_steps_batches_get_the_workers_episode_ids_and_never_share_one():
    """A "steps" batch holds a varying number of episodes: the driver's ids (``add_to_buffer``) are still the
    ones the Ray workers give (``EpisodeIds.for_slot``, one allotment per slot), distinct across slots and
    iterations."""
    from ssm_metarl_ray.replay.episode_ids import EpisodeIds, episodes_of
    from ssm_metarl_ray.training.meta_train import add_to_buffer, build_state

    meta = MetaConfig(meta_batch_size=2, episodes_per_task=2, batch_unit="steps", inner_lr=0.1)
    cfg = ExperimentConfig(env="cartpole-physics", model=ModelConfig(kind="mlp", hidden_size=8), meta=meta,
                           num_train_tasks=4, num_test_tasks=1).validate()
    state = build_state(cfg)
    w = RolloutWorker(cfg.env, cfg.model, cfg.meta, 2, seed=0)
    expected, total = [], 0
    for version in range(2):
        batches = w.sample_tasks(state.train_tasks[:2])
        add_to_buffer(state, batches)
        for slot, b in enumerate(batches):
            blocks = EpisodeIds.for_slot(meta, version, slot, w.spec.horizon).blocks(episodes_of([b]))
            expected += [blk["episode_id"] for blk in blocks]
            total += sum(ep.rewards.shape[0] for ep in episodes_of([b]))
    ids = state.buffer.state_dict()["episode_id"][: len(state.buffer)]
    assert total > 2 * 2 * 2 * 2  # more episodes than "episodes" batches would hold: the pole falls early
    np.testing.assert_array_equal(np.sort(ids), np.sort(np.concatenate(expected)))
    assert len(np.unique(ids)) == total


def test_steps_batch_unit_needs_single_episode_rows():
    with pytest.raises(ConfigError, match="meta.batch_unit"):
        ExperimentConfig(meta=MetaConfig(method="in-context-maml", episodes_per_trial=2,
                                         batch_unit="steps")).validate()
    with pytest.raises(ConfigError, match="adapt.batch_unit steps needs meta.method maml"):
        ExperimentConfig(meta=MetaConfig(method="in-context-maml", episodes_per_trial=2),
                         adapt=AdaptConfig(batch_unit="steps")).validate()


def test_test_batches_count_in_adapt_batch_unit_and_training_batches_in_meta():
    """``adapt.batch_unit`` "steps" with ``meta.batch_unit`` "episodes" (the maml2017 navigation-2d preset):
    the evaluator's batches are topped up to episodes x horizon env steps, the trainer's are not."""
    from ssm_metarl_ray.training.evaluate import Evaluator
    from ssm_metarl_ray.training.meta_train import build_state

    cfg = ExperimentConfig(env="cartpole-physics", model=ModelConfig(kind="mlp", hidden_size=8),
                           meta=MetaConfig(meta_batch_size=1, episodes_per_task=2, inner_lr=0.1),
                           adapt=AdaptConfig(batch_unit="steps", episodes_per_step=2, adapt_steps=1),
                           num_train_tasks=2, num_test_tasks=1).validate()
    assert cfg.test_meta.batch_unit == "steps" and cfg.meta.batch_unit == "episodes"
    task = build_state(cfg).train_tasks[0]
    ev = Evaluator(cfg, seed=0)
    test_batch = ev.worker.sample(task, 2)
    train_batch = RolloutWorker(cfg.env, cfg.model, cfg.meta, 2, seed=0).sample(task, 2)
    horizon = ev.worker.spec.horizon
    assert test_batch.mask.sum() >= 2 * horizon and test_batch.rewards.shape[0] > 2  # the pole falls early
    assert train_batch.rewards.shape[0] == 2 and train_batch.mask.sum() < 2 * horizon


def test_configs_stored_before_adapt_batch_unit_evaluate_as_they_did():
    """A stored config without ``adapt.batch_unit`` (test batches then counted in ``meta.batch_unit``) gets
    the meta unit; a config that has it keeps its own."""
    d = ExperimentConfig(meta=MetaConfig(batch_unit="steps")).to_dict()
    del d["adapt"]["batch_unit"]
    assert ExperimentConfig.from_dict(d).adapt.batch_unit == "steps"
    d["adapt"]["batch_unit"] = "episodes"
    assert ExperimentConfig.from_dict(d).adapt.batch_unit == "episodes"


def test_stale_weights_are_ignored():
    w = _worker()
    w.set_weights(w.get_weights(), 3)
    new = {k: v + 1.0 for k, v in w.get_weights().items()}
    w.set_weights(new, 2)
    assert not np.allclose(w.get_weights()["actor.bias"], new["actor.bias"])


@pytest.mark.parametrize("mode", ["standard", "hybrid"])
def test_adapters_report_each_step_and_never_touch_meta_parameters(mode):
    w = _worker()
    train, test = _tasks()
    buf = ExperienceBuffer(10_000, w.spec.obs_dim, w.spec.act_dim)
    for i, b in enumerate(w.sample_many(train, 3)):
        buf.add(episodes_to_block(b, 100 * i))
    before = {k: v.clone() for k, v in w.policy.state_dict().items()}
    cfg = AdaptConfig(adapt_steps=2, episodes_per_step=3, experience_batch_size=4, experience_weight=0.5)
    adapter = make_adapter(mode, w.policy, cfg, buf, horizon=100)
    res = adapter.adapt(w, test[0])
    assert len(res.returns) == 3 and res.env_steps == 9 * 100
    assert any(not torch.equal(res.params[k], before[k]) for k in res.params)
    for k, v in w.policy.state_dict().items():
        assert torch.equal(v, before[k])
    if mode == "hybrid":
        assert test[0].index in buf.task_ids()  # fresh data was stored for later steps


@pytest.mark.parametrize("schedule, lrs", [("geometric", [0.4, 0.2, 0.1]), ("first", [0.4, 0.2, 0.2])])
def test_adaptation_step_sizes_follow_the_schedule(schedule, lrs):
    """``geometric``: step s at adapt_lr * decay**s; ``first``: every step after the first at adapt_lr * decay
    (rllab's VPG with ``init_learning_rate``, as MAML 2017's test scripts ran it)."""
    w = _worker()
    cfg = AdaptConfig(adapt_lr=0.4, adapt_lr_decay=0.5, adapt_lr_schedule=schedule, adapt_steps=3, episodes_per_step=2)
    adapter = StandardAdapter(w.policy, cfg)
    seen: list[float] = []
    adapter.step = lambda params, batch, lr, s: seen.append(lr) or params  # type: ignore[method-assign]
    adapter.adapt(w, _tasks()[1][0])
    assert seen == pytest.approx(lrs)
    with pytest.raises(ConfigError, match="adapt_lr_schedule 'halving'; allowed: geometric, first"):
        ExperimentConfig.from_dict({"adapt": {"adapt_lr_schedule": "halving"}})


def test_hybrid_loss_adds_weighted_replay_term():
    w = _worker()
    train, test = _tasks()
    buf = ExperienceBuffer(10_000, w.spec.obs_dim, w.spec.act_dim)
    buf.add(episodes_to_block(w.sample(train[0], 3), 0))
    batch = w.sample(test[0], 3)
    params = {k: v.detach() for k, v in w.policy.named_parameters()}
    std = StandardAdapter(w.policy, AdaptConfig())
    hyb = HybridAdapter(w.policy, AdaptConfig(experience_weight=0.5, experience_batch_size=2), buf, 100, seed=1)
    hyb.begin_task(test[0])
    seq = hyb.replay_batch()
    assert seq["task_id"][seq["mask"]].tolist() == [train[0].index] * int(seq["mask"].sum())
    hyb.replay_batch = lambda: seq
    expected = std.loss(params, batch) + 0.5 * hyb.replay_loss(params, seq)
    torch.testing.assert_close(hyb.loss(params, batch), expected)
    zero = HybridAdapter(w.policy, AdaptConfig(experience_weight=0.0), buf, 100)
    zero.begin_task(test[0])
    torch.testing.assert_close(zero.loss(params, batch), std.loss(params, batch))


@pytest.mark.mujoco
@pytest.mark.parametrize("env", ["halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal", "cartpole-physics"])
def test_every_family_runs_a_meta_iteration_and_hybrid_adaptation(env):
    from ssm_metarl_ray.algorithms.maml import MetaLearner

    w = _worker(env, episodes=2)
    train, test = _tasks(env, 2)
    learner = MetaLearner(w.spec.make_policy(SMALL), MetaConfig(episodes_per_task=2, outer_steps=1))
    w.set_weights(learner.get_weights(), learner.version)
    batches = w.sample_tasks(train)
    metrics = learner.update(batches)
    assert np.isfinite(metrics["meta/post_return"]) and learner.version == 1
    buf = ExperienceBuffer(5_000, w.spec.obs_dim, 1 if w.spec.discrete else w.spec.act_dim, w.spec.discrete)
    for i, b in enumerate(batches):
        buf.add(episodes_to_block(b.post, 10 * i))
    adapter = make_adapter("hybrid", w.policy, AdaptConfig(adapt_steps=1, episodes_per_step=2,
                                                           experience_batch_size=2), buf, w.spec.horizon)
    res = adapter.adapt(w, test[0])
    assert len(res.returns) == 2 and all(np.isfinite(res.returns))


@pytest.mark.parametrize("discrete", [False, True])
def test_sampled_log_probs_equal_the_policy_log_prob(discrete):
    """The rollout's sampler writes log p(a) from its noise draw; it must equal policy.log_prob of the action."""
    from ssm_metarl_ray.models.policy import log_prob
    from ssm_metarl_ray.rollout.worker import sample_action

    torch.manual_seed(0)
    dist_params = torch.randn(64, 4 if discrete else 6)
    a, logp = sample_action(dist_params, discrete)
    a_t = torch.from_numpy(np.asarray(a, np.float32)).reshape(64, -1)
    assert logp.shape == (64,) and (a.shape == (64,) if discrete else a.shape == (64, 3))
    np.testing.assert_allclose(logp, log_prob(dist_params, a_t, discrete).numpy(), rtol=1e-5, atol=1e-5)
