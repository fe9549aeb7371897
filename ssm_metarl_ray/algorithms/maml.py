"""MetaMAML with a policy-gradient inner loop, applied functionally (``torch.func.functional_call``).

Inner step (per task):  theta' = theta - alpha * grad_theta L_pg(theta; D_pre)
Outer objective:        L_clip(theta'(theta); D_post) + c_v L_value - c_H H   (ProMP-style surrogate, Adam)
                        or MAML 2017's TRPO step on the post-adaptation surrogate (``algorithms/trpo.py``)

Second-order mode keeps the inner gradient in the graph (``create_graph=True``) so the meta-gradient
differentiates through the inner update; first-order mode treats the inner gradient as a constant.
Meta-parameters are never mutated by adaptation: adapted parameters are new tensors in a dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from ssm_metarl_ray.algorithms.losses import approx_kl, clipped_surrogate, masked_mean, pg_loss, value_loss
from ssm_metarl_ray.algorithms.trpo import conjugate_gradient, flat, flat_grad, line_search, unflat
from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.models.policy import Policy, PolicyOutput, entropy, kl_divergence, log_prob
from ssm_metarl_ray.types import TaskBatch, TorchEpisodes

Params = dict[str, Tensor]


def policy_params(policy: Policy) -> Params:
    return dict(policy.named_parameters())


def run_policy(policy: Policy, params: Params, ep: TorchEpisodes) -> PolicyOutput:
    """Run whole episodes or trials (K, T) through the policy with ``params`` substituted (the state
    restarts where ``ep.core_resets`` is set)."""
    state = policy.initial_state(ep.inputs.shape[0])
    out, _ = functional_call(policy, params, (ep.inputs, state, ep.core_resets))
    return out


def action_log_prob(policy: Policy, params: Params, ep: TorchEpisodes) -> Tensor:
    """log pi_params(a_t | history) of the batch's actions, (K, T)."""
    return log_prob(run_policy(policy, params, ep).dist_params, ep.actions, policy.discrete)


def inner_loss(policy: Policy, params: Params, ep: TorchEpisodes) -> Tensor:
    return pg_loss(action_log_prob(policy, params, ep), ep.logp, ep.advantages, ep.mask)


def sgd_step(params: Params, loss: Tensor, lr: float, create_graph: bool,
             max_grad_norm: float | None = None) -> Params:
    """theta' = theta - lr * clip(grad loss); returns new tensors, ``params`` is left untouched.

    Parameters the loss does not depend on (e.g. the critic in a policy-gradient loss) keep their value.
    The clipping scale is treated as a constant (not differentiated).
    """
    names = list(params)
    grads: Sequence[Tensor] = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                                  allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    if max_grad_norm is not None:
        norm = float(torch.sqrt(cast(Tensor, sum((g.detach() ** 2).sum() for g in grads))))
        grads = [g * min(1.0, max_grad_norm / (norm + 1e-6)) for g in grads]
    return {n: params[n] - lr * g for n, g in zip(names, grads)}


def inner_update(policy: Policy, params: Params, ep: TorchEpisodes, lr: float, create_graph: bool) -> Params:
    """One functional policy-gradient step of the MAML inner loop."""
    return sgd_step(params, inner_loss(policy, params, ep), lr, create_graph)


def adapt(policy: Policy, params: Params, episodes: Iterable[TorchEpisodes], lr: float,
          create_graph: bool, lr_decay: float = 1.0) -> Params:
    """Apply one inner step per batch in ``episodes`` (MAML with several inner steps; step s uses
    ``lr * lr_decay**s``)."""
    return adapt_steps(policy, params, episodes, lr, create_graph, lr_decay)[0][-1]


def adapt_steps(policy: Policy, params: Params, episodes: Iterable[TorchEpisodes], lr: float,
                create_graph: bool, lr_decay: float = 1.0) -> tuple[list[Params], list[Tensor]]:
    """The parameters before and after each inner step, ``[params, theta_1, ..., theta_S]``, and each
    batch's action log-probs under the parameters it was stepped from (``logps[s]`` at ``theta_s``, (K, T))."""
    thetas: list[Params] = [params]
    logps: list[Tensor] = []
    for s, ep in enumerate(episodes):
        logps.append(action_log_prob(policy, thetas[-1], ep))
        loss = pg_loss(logps[-1], ep.logp, ep.advantages, ep.mask)
        thetas.append(sgd_step(thetas[-1], loss, lr * lr_decay**s, create_graph))
    return thetas, logps


def outer_loss(policy: Policy, params: Params, task: TorchTaskBatch, cfg: MetaConfig) -> tuple[Tensor, dict]:
    """Post-adaptation clipped surrogate, differentiated through the inner update(s).

    ``info["adapted"]`` holds the adapted parameters (still in the graph) for health metrics.
    """
    thetas, logps = adapt_steps(policy, params, task.pre, cfg.inner_lr, not cfg.first_order, cfg.inner_lr_decay)
    adapted, post = thetas[-1], task.post
    out = run_policy(policy, adapted, post)
    logp = log_prob(out.dist_params, post.actions, policy.discrete)
    surr = clipped_surrogate(logp, post.logp, post.advantages, post.mask, cfg.clip_eps)
    if cfg.multi_step_loss and len(task.pre) > 1:  # task.pre[s] was sampled at theta_s: its surrogate too,
        mid = [clipped_surrogate(logps[s], ep.logp, ep.advantages, ep.mask, cfg.clip_eps)  # from the inner
               for s, ep in enumerate(task.pre) if s > 0]                                   # step's forward
        surr = torch.stack([*mid, surr]).mean()
    v_loss = value_loss(out.value, post.returns, post.mask)
    ent = (entropy(out.dist_params, policy.discrete) * post.mask).sum() / post.mask.sum()
    loss = surr + cfg.value_coef * v_loss - cfg.entropy_coef * ent
    return loss, {"surrogate": surr.detach(), "value_loss": v_loss.detach(),
                  "kl": approx_kl(logp.detach(), post.logp, post.mask), "adapted": adapted}


def trpo_objective(policy: Policy, params: Params, tasks: list[TorchTaskBatch], cfg: MetaConfig,
                   old: list[Tensor] | None, create_graph: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
    """MAML-TRPO's meta-surrogate and mean KL(old || adapted) over the post-adaptation steps of ``tasks``.

    ``old``: per-task adapted distribution parameters (K, T, ...) at the pre-update theta (None: use the
    ones computed here, so KL == 0). ``create_graph`` keeps the inner step differentiable (second order).
    Returns ``(loss, kl, dist_params per task)``.
    """
    losses, kls, dists = [], [], []
    for i, task in enumerate(tasks):
        adapted = adapt(policy, params, task.pre, cfg.inner_lr, create_graph, cfg.inner_lr_decay)
        post = task.post
        dist = run_policy(policy, adapted, post).dist_params
        ref = dist.detach() if old is None else old[i]
        logp = log_prob(dist, post.actions, policy.discrete)
        losses.append(pg_loss(logp, post.logp, post.advantages, post.mask))
        kls.append(masked_mean(kl_divergence(ref, dist, policy.discrete), post.mask))
        dists.append(dist.detach())
    return torch.stack(losses).mean(), torch.stack(kls).mean(), dists


PARAM_GROUPS = ("core", "actor", "log_std", "critic")
# models whose third derivatives (the exact TRPO Fisher through the inner step) match finite differences
EXACT_FISHER_MODELS = ("mlp", "gru", "lstm")


def group_of(name: str) -> str:
    """Parameter group of a policy parameter name (``core.layers.0.B`` -> ``core``)."""
    head = name.split(".")[0]
    return head if head in PARAM_GROUPS else "core"


def group_norms(named: Mapping[str, Tensor | None]) -> dict[str, float]:
    """L2 norm per parameter group (and ``total``) of gradient-like tensors."""
    sq: dict[str, Tensor] = {}
    for n, g in named.items():
        if g is not None:
            key = group_of(n)
            sq[key] = sq.get(key, 0.0) + g.detach().pow(2).sum()
    out = {k: float(v) ** 0.5 for k, v in sq.items()}
    out["total"] = sum(v**2 for v in out.values()) ** 0.5
    return out


@torch.no_grad()
def inner_step_health(policy: Policy, params: Params, adapted: Params, pre: TorchEpisodes,
                      lr: float) -> dict[str, float]:
    """How far one inner step moved the policy on the data it was computed from.

    ``action_change``: RMS over real steps and action dims of (mean' - mean) / std (continuous; discrete:
    RMS change of the action probabilities); ``kl``: mean KL(adapted || meta); ``inner_grad/<group>``:
    norms of the inner gradient ((theta - theta') / lr; the first inner step only).
    """
    before = run_policy(policy, params, pre).dist_params
    after = run_policy(policy, adapted, pre).dist_params
    kl = masked_mean(kl_divergence(after, before, policy.discrete), pre.mask)
    if policy.discrete:
        diff = torch.softmax(after, -1) - torch.softmax(before, -1)
    else:
        (mb, lsb), (ma, _) = before.chunk(2, -1), after.chunk(2, -1)
        diff = (ma - mb) * torch.exp(-lsb)
    change = masked_mean(diff.pow(2).mean(-1), pre.mask).sqrt()
    grads = {n: (params[n] - adapted[n]) / lr for n in params}
    return {"action_change": float(change), "kl": float(kl),
            **{f"inner_grad/{k}": v for k, v in group_norms(grads).items()}}


class TorchTaskBatch:
    def __init__(self, tb: TaskBatch, dtype: torch.dtype = torch.float32):
        self.pre = [ep.to_torch(dtype) for ep in tb.pre]
        self.post = tb.post.to_torch(dtype)


def _mean_dicts(dicts: list[dict[str, float]], prefix: str) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {f"{prefix}{k}": float(np.mean([d[k] for d in dicts if k in d])) for k in keys}


class MetaLearner:
    """Central learner: ``update(task_batches) -> metrics``; owns the policy and the meta-optimiser.

    ``cfg.outer_optimizer``: ``clipped`` (ProMP-style clipped surrogate, ``outer_steps`` Adam steps with the
    meta-gradient clipped to ``max_grad_norm``) or ``trpo`` (MAML 2017: one natural-gradient step in a KL
    trust region, no Adam state). Metrics carry health diagnostics: ``health/*`` (inner-step action
    change, KL, inner-gradient norms by group) and ``grad/*`` (meta-gradient norms by group).
    """

    def __init__(self, policy: Policy, cfg: MetaConfig):
        kind = policy.cfg.kind
        if cfg.outer_optimizer == "trpo" and cfg.trpo_exact_fisher and not cfg.first_order \
                and kind not in EXACT_FISHER_MODELS:
            raise ValueError(f"trpo_exact_fisher needs third derivatives, verified only for "
                             f"{', '.join(EXACT_FISHER_MODELS)}; got model {kind!r} (use the default Fisher)")
        self.policy, self.cfg = policy, cfg
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.outer_lr)
        self.version = 0

    def update(self, batches: list[TaskBatch]) -> dict[str, float]:
        tasks = [TorchTaskBatch(b) for b in batches]
        if self.cfg.outer_optimizer == "trpo" and self.cfg.inner_steps > 0:
            logs = self._trpo_update(tasks)
        else:
            logs = self._clipped_update(tasks)
        self.version += 1
        pre = np.mean([(b.pre[0] if b.pre else b.post).mean_episode_return for b in batches])
        post = np.mean([b.post.mean_episode_return for b in batches])
        return {"meta/pre_return": float(pre), "meta/post_return": float(post), **logs}

    def _health(self, params: Params, task: TorchTaskBatch, adapted: Params) -> dict[str, float]:
        if not task.pre:
            return {}
        if len(task.pre) > 1:  # report the first inner step only
            adapted = adapt(self.policy, params, task.pre[:1], self.cfg.inner_lr, create_graph=False)
        return inner_step_health(self.policy, params, {k: v.detach() for k, v in adapted.items()},
                                 task.pre[0], self.cfg.inner_lr)

    def _clipped_update(self, tasks: list[TorchTaskBatch]) -> dict[str, float]:
        params = policy_params(self.policy)
        # detached tensors, read back once at the end (one host sync per update on a GPU learner)
        logs: dict[str, list[Tensor]] = {"surrogate": [], "value_loss": [], "kl": [], "grad_norm": []}
        health, grads = [], []
        for step in range(self.cfg.outer_steps):
            self.optimizer.zero_grad(set_to_none=True)
            for task in tasks:  # backward per task keeps at most one task's graph alive
                loss, info = outer_loss(self.policy, params, task, self.cfg)
                if step == 0:
                    health.append(self._health(params, task, info["adapted"]))
                (loss / len(tasks)).backward()
                for k in ("surrogate", "value_loss", "kl"):
                    logs[k].append(info[k])
            grads.append(group_norms({n: p.grad for n, p in self.policy.named_parameters()}))
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
            logs["grad_norm"].append(gn.detach())
            self.optimizer.step()
        means = torch.stack([torch.stack(v).float().mean() for v in logs.values()]).tolist()
        out = {f"meta/{k}": m for k, m in zip(logs, means)}
        out["health/clipped_frac"] = float(np.mean([g > self.cfg.max_grad_norm for g in
                                                    torch.stack(logs["grad_norm"]).tolist()]))
        return {**out, **_mean_dicts(health, "health/"), **_mean_dicts(grads, "grad/")}

    def _trpo_update(self, tasks: list[TorchTaskBatch]) -> dict[str, float]:
        cfg, policy = self.cfg, self.policy
        params = policy_params(policy)
        names = list(params)
        plist = [params[n] for n in names]
        second_order = not cfg.first_order
        loss, kl, old = trpo_objective(policy, params, tasks, cfg, None, create_graph=second_order)
        g = flat_grad(loss, plist, retain_graph=cfg.trpo_exact_fisher)
        if not cfg.trpo_exact_fisher:  # the KL's metric at theta' with the inner-step Jacobian taken as I
            del loss, kl
            loss, kl, _ = trpo_objective(policy, params, tasks, cfg, old, create_graph=False)
        grad_kl = flat_grad(kl, plist, create_graph=True)

        def fvp(v: Tensor) -> Tensor:  # (P,) -> (P,): Hessian of the KL times v, plus damping
            return flat_grad(grad_kl @ v, plist, retain_graph=True) + cfg.trpo_cg_damping * v

        s = conjugate_gradient(fvp, -g.detach(), cfg.trpo_cg_iters)
        shs = 0.5 * torch.dot(s, fvp(s)).detach()
        step = s * torch.sqrt(2 * cfg.trpo_max_kl / shs.clamp_min(1e-20)) if shs > 0 else torch.zeros_like(s)
        health = [self._health(params, t, adapt(policy, params, t.pre, cfg.inner_lr, False, cfg.inner_lr_decay))
                  for t in tasks]
        grads = group_norms(dict(zip(names, unflat(g.detach(), plist))))
        loss0 = float(loss.detach())  # the surrogate at theta (the same value however it was built)
        grad_kl = loss = kl = None  # type: ignore[assignment]  # frees the graphs before the line search
        theta0 = flat([p.detach() for p in plist]).clone()

        def evaluate(fraction: float) -> tuple[float, float]:
            self._set_flat(plist, theta0 + fraction * step)
            lo, k, _ = trpo_objective(policy, params, tasks, cfg, old, create_graph=False)
            return float(lo.detach()), float(k.detach())

        fraction, loss1, kl1, tries = line_search(evaluate, loss0, cfg.trpo_max_kl, cfg.trpo_ls_steps,
                                                  cfg.trpo_ls_ratio)
        self._set_flat(plist, theta0 + fraction * step)
        return {"meta/surrogate": loss1, "meta/kl": kl1, "meta/grad_norm": grads["total"],
                "meta/value_loss": 0.0, "trpo/step_fraction": fraction, "trpo/ls_tries": float(tries),
                "trpo/improvement": loss0 - loss1, "health/clipped_frac": float(fraction == 0.0),
                **_mean_dicts(health, "health/"), **{f"grad/{k}": v for k, v in grads.items()}}

    @staticmethod
    @torch.no_grad()
    def _set_flat(plist: list[Tensor], vector: Tensor) -> None:
        for p, v in zip(plist, unflat(vector, plist)):
            p.copy_(v)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "version": self.version}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
