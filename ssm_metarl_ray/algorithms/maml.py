"""MetaMAML with a policy-gradient inner loop, applied functionally (``torch.func.functional_call``).

Inner step (per task):  theta' = theta - alpha * grad_theta L_pg(theta; D_pre)
Outer objective:        L_clip(theta'(theta); D_post) + c_v L_value - c_H H   (ProMP-style surrogate)

Second-order mode keeps the inner gradient in the graph (``create_graph=True``) so the meta-gradient
differentiates through the inner update; first-order mode treats the inner gradient as a constant.
Meta-parameters are never mutated by adaptation: adapted parameters are new tensors in a dict.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from ssm_metarl_ray.algorithms.losses import approx_kl, clipped_surrogate, pg_loss, value_loss
from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.models.policy import Policy, PolicyOutput, entropy, log_prob
from ssm_metarl_ray.types import TaskBatch, TorchEpisodes

Params = dict[str, Tensor]


def policy_params(policy: Policy) -> Params:
    return dict(policy.named_parameters())


def run_policy(policy: Policy, params: Params, ep: TorchEpisodes) -> PolicyOutput:
    """Run whole episodes (K, T) through the policy with ``params`` substituted."""
    state = policy.initial_state(ep.inputs.shape[0])
    out, _ = functional_call(policy, params, (ep.inputs, state, ep.dones))
    return out


def inner_loss(policy: Policy, params: Params, ep: TorchEpisodes) -> Tensor:
    out = run_policy(policy, params, ep)
    logp = log_prob(out.dist_params, ep.actions, policy.discrete)  # (K, T)
    return pg_loss(logp, ep.logp, ep.advantages, ep.mask)


def sgd_step(params: Params, loss: Tensor, lr: float, create_graph: bool,
             max_grad_norm: float | None = None) -> Params:
    """theta' = theta - lr * clip(grad loss); returns new tensors, ``params`` is left untouched.

    Parameters the loss does not depend on (e.g. the critic in a policy-gradient loss) keep their value.
    The clipping scale is treated as a constant (not differentiated).
    """
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    if max_grad_norm is not None:
        norm = float(torch.sqrt(sum((g.detach() ** 2).sum() for g in grads)))
        grads = [g * min(1.0, max_grad_norm / (norm + 1e-6)) for g in grads]
    return {n: params[n] - lr * g for n, g in zip(names, grads)}


def inner_update(policy: Policy, params: Params, ep: TorchEpisodes, lr: float, create_graph: bool) -> Params:
    """One functional policy-gradient step of the MAML inner loop."""
    return sgd_step(params, inner_loss(policy, params, ep), lr, create_graph)


def adapt(policy: Policy, params: Params, episodes: Iterable[TorchEpisodes], lr: float,
          create_graph: bool) -> Params:
    """Apply one inner step per batch in ``episodes`` (MAML with several inner steps)."""
    for ep in episodes:
        params = inner_update(policy, params, ep, lr, create_graph)
    return params


def outer_loss(policy: Policy, params: Params, task: "TorchTaskBatch", cfg: MetaConfig) -> tuple[Tensor, dict]:
    """Post-adaptation clipped surrogate, differentiated through the inner update(s)."""
    adapted = adapt(policy, params, task.pre, cfg.inner_lr, create_graph=not cfg.first_order)
    post = task.post
    out = run_policy(policy, adapted, post)
    logp = log_prob(out.dist_params, post.actions, policy.discrete)
    surr = clipped_surrogate(logp, post.logp, post.advantages, post.mask, cfg.clip_eps)
    v_loss = value_loss(out.value, post.returns, post.mask)
    ent = (entropy(out.dist_params, policy.discrete) * post.mask).sum() / post.mask.sum()
    loss = surr + cfg.value_coef * v_loss - cfg.entropy_coef * ent
    return loss, {"surrogate": surr.detach(), "value_loss": v_loss.detach(),
                  "kl": approx_kl(logp.detach(), post.logp, post.mask)}


class TorchTaskBatch:
    def __init__(self, tb: TaskBatch, dtype: torch.dtype = torch.float32):
        self.pre = [ep.to_torch(dtype) for ep in tb.pre]
        self.post = tb.post.to_torch(dtype)


class MetaLearner:
    """Central learner: ``update(task_batches) -> metrics``; owns the policy and the meta-optimiser."""

    def __init__(self, policy: Policy, cfg: MetaConfig):
        self.policy, self.cfg = policy, cfg
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.outer_lr)
        self.version = 0

    def update(self, batches: list[TaskBatch]) -> dict[str, float]:
        tasks = [TorchTaskBatch(b) for b in batches]
        params = policy_params(self.policy)
        logs: dict[str, list[float]] = {"surrogate": [], "value_loss": [], "kl": [], "grad_norm": []}
        for _ in range(self.cfg.outer_steps):
            self.optimizer.zero_grad(set_to_none=True)
            for task in tasks:  # backward per task keeps at most one task's graph alive
                loss, info = outer_loss(self.policy, params, task, self.cfg)
                (loss / len(tasks)).backward()
                for k in ("surrogate", "value_loss", "kl"):
                    logs[k].append(float(info[k]))
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
            logs["grad_norm"].append(float(gn))
            self.optimizer.step()
        self.version += 1
        pre = np.mean([(b.pre[0] if b.pre else b.post).episode_returns.mean() for b in batches])
        post = np.mean([b.post.episode_returns.mean() for b in batches])
        return {"meta/pre_return": float(pre), "meta/post_return": float(post),
                **{f"meta/{k}": float(np.mean(v)) for k, v in logs.items()}}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
