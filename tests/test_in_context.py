"""In-context meta-RL: trials (the recurrent state carries across the episodes of a trial), the recurrent
PPO learner over trials, and in-context evaluation (episode 1..N returns)."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from ssm_metarl_ray.algorithms.maml import policy_params, run_policy
from ssm_metarl_ray.algorithms.ppo import PPOLearner, stack_trials
from ssm_metarl_ray.algorithms.returns import trial_episode_returns, trial_episode_returns_reference
from ssm_metarl_ray.config import MODELS, ConfigError, ExperimentConfig, MetaConfig, ModelConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.models.policy import log_prob
from ssm_metarl_ray.rollout.worker import RolloutWorker
from ssm_metarl_ray.training.evaluate import Evaluator
from ssm_metarl_ray.types import TaskBatch

IC = replace(MetaConfig(), method="in-context", episodes_per_task=3, episodes_per_trial=2, value_coef=0.5,
             outer_steps=2, ppo_minibatches=2, outer_lr=1e-3, gae_lambda=0.95)


def small_model(kind: str) -> ModelConfig:
    return ModelConfig(kind=kind, hidden_size=16, num_layers=1, state_size=4, context_len=256)


@pytest.mark.parametrize("kind", MODELS)
def test_trial_rollout_equals_sequence_replay(kind):
    """The sampler's O(1) steps (state carried over episode boundaries) and the training path's sequence
    pass over the whole trial give the same log-probabilities, for every model."""
    torch.manual_seed(0)
    w = RolloutWorker("cartpole-physics", small_model(kind), IC, 4, seed=1)  # terminates early: ragged
    task = w.envs[0].sample_tasks(1, np.random.default_rng(0))[0]
    b = w.sample_trials([task], 3, 3)[0]
    assert b.rewards.shape == (3, 3 * w.spec.horizon)
    assert (b.resets[:, 0] == 1).all() and b.resets[:, 1:].sum() == 0
    starts = b.dones.sum(1)
    assert (starts >= 2).all() and (starts <= 3).all()  # several episodes per row, the next starts at once
    real = b.mask.astype(bool)
    assert all(np.flatnonzero(~row).min(initial=len(row)) == row.sum() for row in real)  # padding only at the end
    ep = b.to_torch()
    with torch.no_grad():
        out = run_policy(w.policy, policy_params(w.policy), ep)
        logp = log_prob(out.dist_params, ep.actions, w.policy.discrete)
    np.testing.assert_allclose(logp.numpy()[real], b.logp[real], atol=2e-5, rtol=1e-5)


def test_one_episode_trials_are_ordinary_episodes():
    """episodes_per_trial 1 samples exactly what ``sample_many`` samples (same seeds, same data)."""
    a = RolloutWorker("navigation-2d", small_model("gru"), IC, 3, seed=5)
    b = RolloutWorker("navigation-2d", small_model("gru"), IC, 3, seed=5)
    b.policy.load_state_dict(a.policy.state_dict())
    task = Task("navigation-2d", 0, {"goal_x": 0.3, "goal_y": -0.2})
    torch.manual_seed(0)
    x = a.sample_trials([task], 3, 1)[0]
    torch.manual_seed(0)
    y = b.sample_many([task], 3)[0]
    for k in ("inputs", "actions", "rewards", "logp", "dones", "mask"):
        np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
    np.testing.assert_array_equal(x.core_resets, y.dones)


def test_trial_episode_returns_match_reference():
    rng = np.random.default_rng(0)
    k, length, n = 5, 30, 3
    rewards = rng.normal(size=(k, length))
    dones = np.zeros((k, length))
    dones[:, 0] = 1
    dones[rng.random((k, length)) < 0.1] = 1
    mask = (np.arange(length)[None] < rng.integers(10, length + 1, size=(k, 1))).astype(float)
    got = trial_episode_returns(rewards, dones, mask, n)
    want = trial_episode_returns_reference(rewards, dones, mask, n)
    np.testing.assert_allclose(got, want)
    assert np.isnan(got).any()  # some rows end before their third episode


def _trials(kind="ssm", seed=0):
    torch.manual_seed(seed)
    w = RolloutWorker("navigation-2d", small_model(kind), IC, 4, seed=seed)
    tasks = w.envs[0].sample_tasks(2, np.random.default_rng(seed))
    return w, w.sample_tasks(tasks)


def test_ppo_update_moves_the_policy_and_reports_in_context_returns():
    w, batches = _trials()
    assert all(isinstance(b, TaskBatch) and not b.pre and b.post.resets is not None for b in batches)
    learner = PPOLearner(w.policy, IC, seed=0)
    before = {k: v.clone() for k, v in w.policy.state_dict().items()}
    m = learner.update(batches)
    assert learner.version == 1
    assert any(not torch.equal(before[k], v) for k, v in w.policy.state_dict().items())
    per_ep = trial_episode_returns(*(getattr(stack_trials(batches), f) for f in ("rewards", "dones", "mask")), 2)
    assert m["meta/pre_return"] == pytest.approx(np.nanmean(per_ep[:, 0]))
    assert m["meta/post_return"] == pytest.approx(np.nanmean(per_ep[:, 1]))
    for key in ("meta/value_loss", "meta/kl", "meta/clip_frac", "meta/entropy", "grad/core", "grad/critic"):
        assert np.isfinite(m[key]), key


def test_ppo_resume_is_exact():
    """state_dict -> load_state_dict -> the same update gives the same weights (minibatch order included)."""
    w, batches = _trials(seed=3)
    a = PPOLearner(w.policy, IC, seed=0)
    a.update(batches)
    state = copy.deepcopy(a.state_dict())  # what a checkpoint holds (the live dict shares Adam's tensors)
    a.update(batches)
    w2 = RolloutWorker("navigation-2d", small_model("ssm"), IC, 4, seed=3)
    b = PPOLearner(w2.policy, IC, seed=0)
    b.load_state_dict(state)
    b.update(batches)
    for k, v in a.policy.state_dict().items():
        torch.testing.assert_close(v, b.policy.state_dict()[k])


def test_ppo_lr_schedule_and_recurrence_group():
    """anneal_lr: update k runs at outer_lr * (1 - k / total) (logged, resumable); recurrent_lr_scale puts
    exactly the SSM's recurrence parameters in a slower Adam group; anneal_lr without a total is refused."""
    w, batches = _trials(seed=5)
    cfg = replace(IC, anneal_lr=True, recurrent_lr_scale=0.25)
    learner = PPOLearner(w.policy, cfg, seed=0, total_updates=4)
    fast, slow = learner.optimizer.param_groups  # the rest, then the recurrence
    names = {id(p): n for n, p in w.policy.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in slow["params"]} == {"nu_log", "theta_log", "gamma_log", "B"}
    assert all("layers" in names[id(p)] for p in slow["params"]) and len(fast["params"]) > len(slow["params"])
    lrs = [learner.update(batches)["meta/lr"] for _ in range(2)]
    assert lrs == pytest.approx([1e-3, 0.75e-3])
    assert slow["lr"] == pytest.approx(0.25 * 0.75e-3) and fast["lr"] == pytest.approx(0.75e-3)
    resumed = PPOLearner(w.policy, cfg, seed=0, total_updates=4)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert resumed.update(batches)["meta/lr"] == pytest.approx(0.5e-3)
    assert len(PPOLearner(w.policy, IC).optimizer.param_groups) == 1  # one group unless scaled
    with pytest.raises(ValueError, match="total_updates"):
        PPOLearner(w.policy, cfg)


def test_ppo_reward_scale_is_the_running_return_std_and_critic_clipped_alone():
    """Rewards are divided by the running std of the discounted return (state in the checkpoint); with a
    detached critic a huge value error cannot shrink the policy's clipped step."""
    from ssm_metarl_ray.algorithms.returns import discounted_returns

    w, batches = _trials(seed=4)
    learner = PPOLearner(w.policy, replace(IC, normalize_rewards=True), seed=0)
    data = stack_trials(batches)
    g = discounted_returns(data.rewards, data.mask, IC.gamma)[data.mask > 0]
    assert learner.reward_scale(data) == pytest.approx(1.0 / g.std(), rel=1e-9)
    assert learner.return_moments[0] == g.size
    assert PPOLearner(w.policy, IC).reward_scale(data) == 1.0  # off by default
    groups = learner._clip_groups
    assert len(groups) == 2 and all(n.startswith("critic.") for n, p in w.policy.named_parameters()
                                    if any(p is q for q in groups[1]))
    state = learner.state_dict()
    other = PPOLearner(w.policy, replace(IC, normalize_rewards=True))
    other.load_state_dict(state)
    assert other.return_moments == learner.return_moments


def test_task_inference_loss_trains_the_core_to_carry_the_task():
    """task_inference_coef: the worker labels each trial with its task's parameters; the learner's linear
    head predicts them from the core's output (masked squared error == a per-step reference), its gradient
    reaches the core, repeated updates on the same trials lower it, and the head is in the checkpoint
    (resume exact). Only the in-context method takes it."""
    from ssm_metarl_ray.algorithms.ppo import task_inference_loss, task_targets

    w, batches = _trials(seed=6)
    assert [b.task_params for b in batches] == [(t.params["goal_x"], t.params["goal_y"]) for t in
                                                w.envs[0].sample_tasks(2, np.random.default_rng(6))]
    targets = task_targets(batches)
    assert targets.shape == (stack_trials(batches).rewards.shape[0], 2)
    pred, tgt = torch.randn(3, 5, 2), torch.randn(3, 2)
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] * 4 + [0.0]])
    ref = sum(float(((pred[i, t] - tgt[i]) ** 2).sum()) for i in range(3) for t in range(5) if mask[i, t])
    assert float(task_inference_loss(pred, tgt, mask)) == pytest.approx(ref / float(mask.sum()), rel=1e-6)

    cfg = replace(IC, task_inference_coef=1.0, outer_lr=3e-3)
    state0 = copy.deepcopy(w.policy.state_dict())
    learner = PPOLearner(w.policy, cfg, seed=0, task_dim=2)
    losses = [learner.update(batches)["meta/task_inference_loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0], losses
    plain_w, _ = _trials(seed=6)  # the same start without the loss: the core moves differently
    PPOLearner(plain_w.policy, IC, seed=0).update(batches)
    aux_w, _ = _trials(seed=6)
    PPOLearner(aux_w.policy, cfg, seed=0, task_dim=2).update(batches)
    core = [k for k in state0 if k.startswith("core.")]
    assert any(not torch.allclose(plain_w.policy.state_dict()[k], aux_w.policy.state_dict()[k]) for k in core)
    saved = copy.deepcopy(learner.state_dict())
    assert "task_head" in saved
    learner.update(batches)
    other_w, _ = _trials(seed=6)
    other = PPOLearner(other_w.policy, cfg, seed=0, task_dim=2)
    other.load_state_dict(saved)
    other.update(batches)
    for k, v in learner.policy.state_dict().items():
        torch.testing.assert_close(v, other.policy.state_dict()[k])
    torch.testing.assert_close(learner.task_head.weight, other.task_head.weight)
    with pytest.raises(ValueError, match="task parameters"):
        PPOLearner(w.policy, cfg)
    with pytest.raises(ConfigError, match="meta.task_inference_coef must be 0 unless"):
        replace(ExperimentConfig(), meta=replace(MetaConfig(), task_inference_coef=0.5)).validate()


def test_mlp_heads_follow_the_recurrent_contract():
    """head_hidden > 0: Linear-tanh-Linear actor and critic heads; trial rollout == sequence replay."""
    torch.manual_seed(0)
    model = replace(small_model("ssm"), head_hidden=8)
    w = RolloutWorker("navigation-2d", model, IC, 2, seed=2)
    assert isinstance(w.policy.actor, torch.nn.Sequential) and w.policy.actor[0].out_features == 8
    task = w.envs[0].sample_tasks(1, np.random.default_rng(0))[0]
    b = w.sample_trials([task], 2, 2)[0]
    ep = b.to_torch()
    with torch.no_grad():
        out = run_policy(w.policy, policy_params(w.policy), ep)
    real = b.mask.astype(bool)
    np.testing.assert_allclose(log_prob(out.dist_params, ep.actions, False).numpy()[real], b.logp[real],
                               atol=2e-5, rtol=1e-5)


def test_in_context_needs_a_critic():
    with pytest.raises(ConfigError, match="meta.value_coef must be > 0"):
        ExperimentConfig(meta=replace(IC, value_coef=0.0)).validate()


def test_in_context_evaluation_reports_each_episode_of_a_trial():
    cfg = ExperimentConfig(model=small_model("ssm"), meta=IC, num_train_tasks=4, num_test_tasks=2)
    cfg = replace(cfg, adapt=replace(cfg.adapt, episodes_per_step=2))
    ev = Evaluator(cfg, seed=1)
    tasks = ev.worker.envs[0].sample_tasks(2, np.random.default_rng(0))
    out = ev.evaluate(tasks, "in-context")
    assert len(out) == 2 and all(len(r) == 2 and all(np.isfinite(r)) for r in out)


def test_cli_in_context_run(tmp_path):
    """``train --method in-context`` end to end: the method's defaults, PPO history, in-context and standard
    evaluation (episode 1..N of a trial; gradient steps)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "MUJOCO_GL": "disable"}
    out = tmp_path / "ic"
    r = subprocess.run([sys.executable, "-m", "ssm_metarl_ray", "train", "--method", "in-context", "--iterations",
                        "2", "--meta-batch-size", "2", "--num-test-tasks", "2", "--hidden-size", "8",
                        "--adapt-steps", "1", "--num-workers", "0", "--quiet", "--output-dir", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["meta"]["method"] == "in-context" and m["config"]["meta"]["value_coef"] == 0.5
    assert m["config"]["meta"]["episodes_per_trial"] == 2 and m["config"]["model"]["critic_detached"]
    assert m["config"]["meta"]["outer_lr"] == 1e-4  # the SSM's in-context step size
    assert list(m["evaluation"]) == ["in-context", "standard"]
    assert len(m["evaluation"]["in-context"]["mean"]) == 2 and len(m["evaluation"]["standard"]["mean"]) == 2
    assert {"meta/value_loss", "meta/clip_frac", "meta/pre_return"} <= set(m["history"][0])
    assert "episode 2 of a trial vs episode 1, the return changes by" in r.stdout


@pytest.mark.parametrize("argv, lr", [(["--model", "ssm"], 1e-4), (["--model", "gru"], 1e-3),
                                      (["--model", "ssm", "--outer-lr", "3e-4"], 3e-4)])
def test_in_context_outer_lr_default_per_model(argv, lr):
    from ssm_metarl_ray.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--method", "in-context", *argv])
    assert config_from_args(args).meta.outer_lr == lr


# ---- in-context-maml: MetaMAML whose trajectories are trials ---------------------------------------
ICM = replace(MetaConfig(), method="in-context-maml", episodes_per_task=3, episodes_per_trial=2, outer_steps=1)


def test_in_context_maml_samples_trials_before_and_after_the_inner_step():
    """Pre- and post-adaptation batches are trials (state reset at the row's start only, ``dones`` at each
    episode start, two horizons long); the post rows use each task's adapted parameters; the MetaMAML
    update runs on them and reports per-episode returns."""
    from ssm_metarl_ray.algorithms.maml import MetaLearner
    from ssm_metarl_ray.envs import make_env, task_splits

    w = RolloutWorker("navigation-2d", small_model("ssm"), ICM, num_envs=6, seed=0)
    tasks = task_splits(make_env("navigation-2d"), 2, 1, 0)[0]
    batches = w.sample_tasks(tasks)
    H = w.spec.horizon
    for b in batches:
        for ep in [*b.pre, b.post]:
            assert ep.inputs.shape[:2] == (3, 2 * H) and ep.resets is not None
            assert (ep.resets[:, 0] == 1).all() and ep.resets[:, 1:].sum() == 0
            assert ((ep.dones * ep.mask).sum(1) == 2).all()  # two episodes in every trial
            assert np.isfinite(ep.advantages).all() and abs(ep.mean_episode_return) > 0
        assert ep.mean_episode_return == pytest.approx((ep.rewards * ep.mask).sum() / 6)
    learner = MetaLearner(w.spec.make_policy(small_model("ssm")), ICM)
    logs = learner.update(batches)
    assert np.isfinite(logs["meta/surrogate"]) and logs["health/action_change"] > 0


def test_replayed_trials_reset_the_state_only_at_their_start():
    """ExperienceBuffer.sample_sequences(trial_start=True) returns whole trials as collected; their replay
    (sequences_to_torch(trials=True)) gives the log-probs the policy had when it collected them."""
    from ssm_metarl_ray.replay.buffer import ExperienceBuffer
    from ssm_metarl_ray.replay.convert import episodes_to_block, sequences_to_torch

    w = RolloutWorker("navigation-2d", small_model("gru"), ICM, num_envs=3, seed=1)
    task = w.envs[0].sample_tasks(1, np.random.default_rng(0))[0]
    batch = w.sample(task, 3)
    buf = ExperienceBuffer(10_000, w.spec.obs_dim, w.spec.act_dim, False)
    buf.add(episodes_to_block(batch, 0))
    L = 2 * w.spec.horizon
    seq = buf.sample_sequences(4, L, np.random.default_rng(0), trial_start=True)
    assert (seq["step"][:, 0] == 0).all() and (seq["dones"][:, 1:] * seq["mask"][:, 1:]).sum(1).min() == 1
    ep = sequences_to_torch(seq, False, w.spec.act_dim, trials=True)
    assert ep.core_resets[:, 0].eq(1).all() and ep.core_resets[:, 1:].eq(0).all()
    with torch.no_grad():
        out = run_policy(w.policy, policy_params(w.policy), ep)
        logp = log_prob(out.dist_params, ep.actions, False)
    m = ep.mask.bool()
    torch.testing.assert_close(logp[m], ep.logp[m], rtol=1e-4, atol=1e-4)
    # the episode-level replay resets inside the trial: different log-probs at the second episode
    ep1 = sequences_to_torch(seq, False, w.spec.act_dim, trials=False)
    with torch.no_grad():
        logp1 = log_prob(run_policy(w.policy, policy_params(w.policy), ep1).dist_params, ep1.actions, False)
    assert not torch.allclose(logp1[m], ep.logp[m], atol=1e-4)


def test_cli_in_context_maml_run(tmp_path):
    """``train --method in-context-maml`` end to end: trials of two episodes, MetaMAML history, and
    in-context, standard and hybrid evaluation."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "MUJOCO_GL": "disable"}
    out = tmp_path / "icm"
    r = subprocess.run([sys.executable, "-m", "ssm_metarl_ray", "train", "--method", "in-context-maml",
                        "--iterations", "2", "--meta-batch-size", "2", "--episodes-per-task", "2",
                        "--num-test-tasks", "2", "--hidden-size", "8", "--adapt-steps", "1", "--num-workers", "0",
                        "--quiet", "--output-dir", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["meta"]["method"] == "in-context-maml" and m["config"]["meta"]["episodes_per_trial"] == 2
    assert m["config"]["meta"]["value_coef"] == MetaConfig.value_coef  # MetaMAML's settings, not PPO's
    assert list(m["evaluation"]) == ["in-context", "standard", "hybrid"]
    assert all(len(m["evaluation"][k]["mean"]) == 2 for k in m["evaluation"])
    assert {"meta/surrogate", "health/action_change", "meta/pre_return"} <= set(m["history"][0])
