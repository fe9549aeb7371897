"""MetaMAML: the second-order meta-gradient matches finite differences; adaptation never mutates
meta-parameters; first- and second-order gradients differ only by the second-order term."""

import numpy as np
import pytest
import torch

from ssm_metarl_ray.algorithms.losses import clipped_surrogate
from ssm_metarl_ray.algorithms.maml import (
    MetaLearner,
    TorchTaskBatch,
    adapt,
    adapt_steps,
    outer_loss,
    policy_params,
    run_policy,
)
from ssm_metarl_ray.config import MetaConfig, ModelConfig
from ssm_metarl_ray.envs import make_env, task_splits
from ssm_metarl_ray.models.policy import log_prob
from ssm_metarl_ray.rollout.worker import RolloutWorker


def _tiny(kind: str, inner_steps: int = 1, first_order: bool = False, shared_critic: bool = False,
          gate: tuple[float, list[float]] | None = None):
    """A tiny policy and one task's data. ``shared_critic``: the critic reads undetached core features and
    the value loss is part of the outer loss (otherwise the loss is the detached-critic default's, whose
    value term is a separate objective and so not part of a finite-difference check of the meta-loss).
    ``gate``: a ``model.history_gate`` policy (with ``head_obs``), its gate and gate changes set to these."""
    torch.manual_seed(0)
    model = ModelConfig(kind=kind, hidden_size=8, num_layers=1, state_size=4, num_heads=2, context_len=8,
                        critic_detached=not shared_critic, head_obs=gate is not None, history_gate=gate is not None)
    meta = MetaConfig(episodes_per_task=3, inner_steps=inner_steps, inner_lr=0.5, first_order=first_order,
                      value_coef=0.5 if shared_critic else 0.0, entropy_coef=0.01)
    worker = RolloutWorker("navigation-2d", model, meta, num_envs=3, seed=0)
    if gate is not None:
        with torch.no_grad():
            worker.policy.history_gate.fill_(gate[0])
            worker.policy.history_gate_deltas.copy_(torch.tensor(gate[1]))
    train, _ = task_splits(make_env("navigation-2d"), 4, 1, seed=0)
    tb = worker.sample_task(train[0])
    for ep in [*tb.pre, tb.post]:  # shorten episodes to keep finite differences cheap
        for name in ("inputs", "obs", "actions", "rewards", "logp", "dones", "mask", "advantages", "returns"):
            setattr(ep, name, getattr(ep, name)[:, :12])
    policy = worker.policy.double()
    task = TorchTaskBatch(tb, torch.float64)
    # make the post batch "on-policy" at theta so the clipped surrogate is smooth around theta
    adapted = adapt(policy, policy_params(policy), task.pre, meta.inner_lr, create_graph=False)
    with torch.no_grad():
        out = run_policy(policy, {k: v.detach() for k, v in adapted.items()}, task.post)
        task.post.logp = log_prob(out.dist_params, task.post.actions, policy.discrete)
    return policy, task, meta


def _assert_matches_finite_differences(policy, params, grads, task, meta, rng, eps=1e-5):
    """The meta-gradient ``grads`` (name -> tensor) along a random direction drawn from ``rng`` equals the
    central difference of ``outer_loss`` along it."""
    d = {k: torch.as_tensor(rng.normal(size=v.shape)) for k, v in params.items()}
    shifted = [{k: (v + sign * eps * d[k]).detach().requires_grad_(True) for k, v in params.items()}
               for sign in (1, -1)]
    fd = (outer_loss(policy, shifted[0], task, meta)[0] - outer_loss(policy, shifted[1], task, meta)[0]) / (2 * eps)
    an = sum((grads[k] * d[k]).sum() for k in params)
    assert torch.isclose(an, fd, rtol=1e-4, atol=1e-7), (float(an), float(fd))


@pytest.mark.parametrize("kind,shared_critic", [("mlp", False), ("ssm", False), ("gru", False),
                                                ("lstm", False), ("transformer", False),
                                                ("mlp", True)])
def test_second_order_meta_gradient_matches_finite_differences(kind, shared_critic):
    policy, task, meta = _tiny(kind, shared_critic=shared_critic)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    loss, _ = outer_loss(policy, params, task, meta)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    rng = np.random.default_rng(0)
    for _ in range(3):
        _assert_matches_finite_differences(policy, params, grads, task, meta, rng)


def test_first_order_differs_from_second_order_and_two_inner_steps_work():
    policy, task, meta = _tiny("mlp")
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    g2 = torch.autograd.grad(outer_loss(policy, params, task, meta)[0], list(params.values()))
    fo = MetaConfig(**{**meta.__dict__, "first_order": True})
    g1 = torch.autograd.grad(outer_loss(policy, params, task, fo)[0], list(params.values()))
    diff = sum(float((a - b).abs().sum()) for a, b in zip(g1, g2))
    total = sum(float(a.abs().sum()) for a in g2)
    assert 0 < diff < total  # the second-order term is present but does not dominate


def test_decayed_inner_steps_match_the_workers_sampling_policies():
    """inner_lr_decay: the learner's theta_1, theta_2 (steps at lr, lr * decay) are the policies the worker
    sampled pre[1] and post with (their log-probabilities reproduce the recorded ones)."""
    torch.manual_seed(0)
    model = ModelConfig(kind="mlp", hidden_size=8, num_layers=1)
    meta = MetaConfig(episodes_per_task=3, inner_steps=2, inner_lr=0.5, inner_lr_decay=0.25)
    worker = RolloutWorker("navigation-2d", model, meta, num_envs=3, seed=0)
    tb = worker.sample_task(task_splits(make_env("navigation-2d"), 4, 1, seed=0)[0][0])
    task = TorchTaskBatch(tb)
    thetas, _ = adapt_steps(worker.policy, policy_params(worker.policy), task.pre, 0.5, False, 0.25)
    for theta, ep in zip(thetas[1:], [task.pre[1], task.post]):
        with torch.no_grad():
            logp = log_prob(run_policy(worker.policy, theta, ep).dist_params, ep.actions, False)
        torch.testing.assert_close(logp * ep.mask, ep.logp * ep.mask, atol=2e-4, rtol=0)
    undecayed = adapt(worker.policy, policy_params(worker.policy), task.pre, 0.5, False)
    assert any(not torch.allclose(undecayed[k], thetas[2][k]) for k in undecayed)


def test_multi_step_loss_averages_the_surrogate_after_every_step():
    """multi_step_loss: the outer loss is the mean of the clipped surrogates of pre[1] at theta_1 and post
    at theta_2 (entropy bonus off), and its second-order meta-gradient matches finite differences."""
    policy, task, meta = _tiny("mlp", inner_steps=2)
    meta = MetaConfig(**{**meta.__dict__, "multi_step_loss": True, "inner_lr_decay": 0.5, "entropy_coef": 0.0})
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    loss, _ = outer_loss(policy, params, task, meta)
    thetas, _ = adapt_steps(policy, params, task.pre, meta.inner_lr, True, 0.5)

    def surrogate(theta, ep):
        logp = log_prob(run_policy(policy, theta, ep).dist_params, ep.actions, policy.discrete)
        return clipped_surrogate(logp, ep.logp, ep.advantages, ep.mask, meta.clip_eps)

    expected = 0.5 * (surrogate(thetas[1], task.pre[1]) + surrogate(thetas[2], task.post))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    single, _ = outer_loss(policy, params, task, MetaConfig(**{**meta.__dict__, "multi_step_loss": False}))
    assert not torch.isclose(single, loss)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    _assert_matches_finite_differences(policy, params, grads, task, meta, np.random.default_rng(1))


def test_heads_only_inner_step_keeps_the_core_and_its_meta_gradient_matches_finite_differences():
    """inner_params "heads" (ANIL): the inner step changes only the actor/log-std/critic parameters (the
    core's tensors are passed through), the worker samples post with exactly those adapted parameters, the
    second-order meta-gradient (which reaches the core through the features) matches finite differences,
    and a test-time step with adapt_params "heads" leaves the core as it was."""
    from ssm_metarl_ray.adapters.standard import StandardAdapter
    from ssm_metarl_ray.algorithms.maml import adapted_names, group_of
    from ssm_metarl_ray.config import AdaptConfig

    policy, task, meta = _tiny("ssm")
    meta = MetaConfig(**{**meta.__dict__, "inner_params": "heads"})
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    heads = adapted_names(params, "heads")
    assert heads and all(group_of(n) != "core" for n in heads) and len(heads) < len(params)
    adapted = adapt(policy, params, task.pre, meta.inner_lr, create_graph=True, which="heads")
    assert all(adapted[n] is params[n] for n in params if n not in heads)
    assert all(not torch.equal(adapted[n], params[n]) for n in heads if not n.startswith("critic"))
    loss, _ = outer_loss(policy, params, task, meta)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    assert float(sum(g.abs().sum() for n, g in grads.items() if group_of(n) == "core")) > 0
    _assert_matches_finite_differences(policy, params, grads, task, meta, np.random.default_rng(2))
    # the worker's own inner step adapts the same parameters: post's recorded log-probs are reproduced
    torch.manual_seed(0)
    worker = RolloutWorker("navigation-2d", ModelConfig(kind="ssm", hidden_size=8, num_layers=1, state_size=4),
                           MetaConfig(episodes_per_task=3, inner_lr=0.5, inner_params="heads"), num_envs=3, seed=0)
    tb = TorchTaskBatch(worker.sample_task(task_splits(make_env("navigation-2d"), 4, 1, seed=0)[0][0]))
    theta = adapt(worker.policy, policy_params(worker.policy), tb.pre, 0.5, False, which="heads")
    with torch.no_grad():
        logp = log_prob(run_policy(worker.policy, theta, tb.post).dist_params, tb.post.actions, False)
    torch.testing.assert_close(logp * tb.post.mask, tb.post.logp * tb.post.mask, atol=2e-4, rtol=0)
    adapter = StandardAdapter(worker.policy, AdaptConfig(adapt_lr=0.5, adapt_params="heads"))
    meta_params = {k: v.detach() for k, v in policy_params(worker.policy).items()}
    stepped = adapter.step(meta_params, worker.sample(task_splits(make_env("navigation-2d"), 4, 1, seed=0)[0][1], 3),
                           0.5)
    assert all(torch.equal(stepped[n], meta_params[n]) == (group_of(n) == "core") for n in meta_params
               if not n.startswith("critic"))


@pytest.mark.parametrize("which", ["all", "heads"])
def test_history_gate_moves_by_its_meta_learned_changes_and_its_meta_gradient_matches_finite_differences(which):
    """model.history_gate: inner step s sets the gate to gate + deltas[s] (no gradient step on either, also
    with every parameter adapted), the worker samples pre[1] and post with exactly those parameters, a
    test-time step s does the same (the last change reused after the last), and the second-order
    meta-gradient of the multi-step loss reaches the changes of the steps taken and matches finite
    differences."""
    from ssm_metarl_ray.adapters.standard import StandardAdapter
    from ssm_metarl_ray.config import AdaptConfig
    from ssm_metarl_ray.models.policy import GATE, GATE_DELTAS

    policy, task, meta = _tiny("ssm", inner_steps=2, gate=(0.9, [-0.3, -0.5, 0.2]))
    meta = MetaConfig(**{**meta.__dict__, "inner_params": which, "multi_step_loss": True})
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    thetas, _ = adapt_steps(policy, params, task.pre, meta.inner_lr, True, which=which)
    assert [float(t[GATE].detach()) for t in thetas] == pytest.approx([0.9, 0.6, 0.1], abs=1e-6)
    assert all(t[GATE_DELTAS] is params[GATE_DELTAS] for t in thetas)
    assert not torch.equal(thetas[1]["actor.weight"], params["actor.weight"])
    loss, _ = outer_loss(policy, params, task, meta)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    assert float(grads[GATE_DELTAS][0].abs()) > 0 and float(grads[GATE_DELTAS][1].abs()) > 0
    assert float(grads[GATE_DELTAS][2]) == 0.0  # a third step is not taken in training
    _assert_matches_finite_differences(policy, params, grads, task, meta, np.random.default_rng(3))
    # the worker's inner steps move the gate the same way: pre[1] and post's log-probs are reproduced
    torch.manual_seed(0)
    model = ModelConfig(kind="ssm", hidden_size=8, num_layers=1, state_size=4, head_obs=True, history_gate=True)
    worker = RolloutWorker("navigation-2d", model, MetaConfig(episodes_per_task=3, inner_lr=0.5, inner_steps=2,
                                                              inner_params=which), num_envs=3, seed=0)
    with torch.no_grad():
        worker.policy.history_gate_deltas.copy_(torch.tensor([-0.3, -0.5, 0.2]))
    split = task_splits(make_env("navigation-2d"), 4, 1, seed=0)[0]
    tb = TorchTaskBatch(worker.sample_task(split[0]))
    thetas, _ = adapt_steps(worker.policy, policy_params(worker.policy), tb.pre, 0.5, False, which=which)
    for theta, ep in zip(thetas[1:], [tb.pre[1], tb.post]):
        with torch.no_grad():
            logp = log_prob(run_policy(worker.policy, theta, ep).dist_params, ep.actions, False)
        torch.testing.assert_close(logp * ep.mask, ep.logp * ep.mask, atol=2e-4, rtol=0)
    result = StandardAdapter(worker.policy, AdaptConfig(adapt_lr=0.5, adapt_steps=4, episodes_per_step=2,
                                                        adapt_params=which)).adapt(worker, split[1])
    assert float(result.params[GATE]) == pytest.approx(1.0 - 0.3 - 0.5 + 0.2 + 0.2, abs=1e-6)


def test_detached_critic_value_loss_moves_only_the_critic():
    policy, task, meta = _tiny("ssm")
    meta = MetaConfig(**{**meta.__dict__, "value_coef": 1.0, "entropy_coef": 0.0})
    params = {k: v.detach().clone().requires_grad_(True) for k, v in policy_params(policy).items()}
    out = run_policy(policy, params, task.post)
    v_loss = ((out.value - task.post.returns) ** 2 * task.post.mask).sum()
    grads = dict(zip(params, torch.autograd.grad(v_loss, list(params.values()), allow_unused=True)))
    assert all(g is None or float(g.abs().sum()) == 0.0 for n, g in grads.items() if not n.startswith("critic"))
    assert float(grads["critic.weight"].abs().sum()) > 0


def test_adaptation_never_mutates_meta_parameters():
    policy, task, meta = _tiny("ssm")
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    adapted = adapt(policy, policy_params(policy), task.pre, lr=1.0, create_graph=True)
    assert any(not torch.equal(adapted[k], before[k]) for k in adapted)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k])


def test_meta_learner_update_changes_weights_and_reports_metrics():
    torch.manual_seed(0)
    model = ModelConfig(kind="ssm", hidden_size=16, num_layers=1, state_size=8)
    meta = MetaConfig(episodes_per_task=4, outer_steps=2)
    worker = RolloutWorker("navigation-2d", model, meta, num_envs=4, seed=0)
    train, _ = task_splits(make_env("navigation-2d"), 4, 1, seed=0)
    learner = MetaLearner(worker.spec.make_policy(model), meta)
    worker.set_weights(learner.get_weights(), learner.version)
    before = learner.get_weights()
    metrics = learner.update([worker.sample_task(t) for t in train[:2]])
    after = learner.get_weights()
    assert learner.version == 1
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    for key in ("meta/pre_return", "meta/post_return", "meta/surrogate", "meta/kl", "meta/grad_norm",
                "health/action_change", "health/kl", "health/clipped_frac", "health/inner_grad/actor",
                "grad/core", "grad/actor", "grad/log_std"):
        assert np.isfinite(metrics[key]), key
    assert metrics["health/action_change"] > 0 and metrics["health/kl"] > 0
    assert not any(k.startswith("health/gate") for k in metrics)


def test_meta_learner_reports_the_history_gate_after_each_inner_step():
    """model.history_gate: ``health/gate_s`` is the gate after s inner steps (before, then plus each change),
    the meta-update moves the changes of the steps taken, and the inner-step gradient norms leave the gate out."""
    torch.manual_seed(0)
    model = ModelConfig(kind="ssm", hidden_size=16, num_layers=1, state_size=8, head_obs=True, history_gate=True)
    meta = MetaConfig(episodes_per_task=4, outer_steps=2, inner_steps=2, inner_params="heads", multi_step_loss=True)
    worker = RolloutWorker("navigation-2d", model, meta, num_envs=4, seed=0)
    train, _ = task_splits(make_env("navigation-2d"), 4, 1, seed=0)
    learner = MetaLearner(worker.spec.make_policy(model), meta)
    worker.set_weights(learner.get_weights(), learner.version)
    metrics = learner.update([worker.sample_task(t) for t in train[:2]])
    w = learner.get_weights()
    gate, deltas = float(w["history_gate"]), w["history_gate_deltas"]
    assert deltas[0] != 0 and deltas[1] != 0 and deltas[2] == 0
    expected = [gate, gate + deltas[0], gate + deltas[0] + deltas[1], gate + deltas[:3].sum()]
    assert [metrics[f"health/gate_{s}"] for s in range(4)] == pytest.approx(expected, abs=1e-6)
    assert metrics["health/inner_grad/core"] == 0.0  # heads-only steps: the gate's move is no gradient


def test_health_line_shows_the_history_gate_only_when_there_is_one():
    from ssm_metarl_ray.training.outputs import health_line

    m = {"health/action_change": 0.2, "health/kl": 0.05, "grad/core": 0.1, "grad/actor": 0.3}
    assert "gate" not in health_line(m)
    line = health_line({**m, "health/gate_0": 1.0, "health/gate_1": 0.8, "health/gate_2": 0.25, "health/gate_3": 0.2})
    assert line.endswith("| gate 1.00/0.80/0.25")
    assert health_line({}) == "no inner step"
