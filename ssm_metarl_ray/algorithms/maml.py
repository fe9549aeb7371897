"""MetaMAML with a policy-gradient inner loop, applied functionally (``torch.func.functional_call``).

Inner step (per task):  theta' = theta - alpha * grad_theta L_pg(theta; D_pre)
Outer objective:        L_clip(theta'(theta); D_post) + c_v L_value - c_H H   (ProMP-style surrogate, Adam)
                        or MAML 2017's TRPO step on the post-adaptation surrogate (``algorithms/trpo.py``)

Second-order mode keeps the inner gradient in the graph (``create_graph=True``) so the meta-gradient
differentiates through the inner update; first-order mode treats the inner gradient as a constant.
Meta-parameters are never mutated by adaptation: adapted parameters are new tensors in a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from ssm_metarl_ray.algorithms.losses import approx_kl, clipped_surrogate, masked_mean, pg_loss, value_loss
from ssm_metarl_ray.algorithms.trpo import (
    conjugate_gradient,
    flat,
    flat_grad,
    line_search,
    scale_to_kl_boundary,
    unflat,
)
from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.models.policy import GATE, GATE_DELTAS, Policy, PolicyOutput, entropy, kl_divergence, log_prob
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


PARAM_GROUPS = ("core", "actor", "log_std", "critic")


def group_of(name: str) -> str:
    """Parameter group of a policy parameter name (``core.layers.0.B`` -> ``core``)."""
    head = name.split(".")[0]
    return head if head in PARAM_GROUPS else "core"


def adapted_names(params: Params, which: str) -> list[str]:
    """The parameters an inner step's gradient changes: ``all``, or the ``heads`` (every group but the core:
    ANIL); never the history gate's (:func:`advance_gate` moves it)."""
    if which == "all":
        return [n for n in params if n not in (GATE, GATE_DELTAS)]
    if which == "heads":
        return [n for n in params if group_of(n) != "core"]
    raise ValueError(f"inner parameters must be 'all' or 'heads', got {which!r}")


def advance_gate(params: Params, step: int) -> Params:
    """``model.history_gate``: the gate after inner step ``step`` (0-based) is the gate before it plus its
    meta-learned change ``history_gate_deltas[step]`` (the last one for later steps); in the graph, so the
    meta-gradient reaches the changes. Parameters without a gate are returned as they are."""
    if GATE_DELTAS not in params:
        return params
    deltas = params[GATE_DELTAS]  # (GATE_STEPS,)
    return {**params, GATE: params[GATE] + deltas[min(step, deltas.shape[0] - 1)]}


def sgd_step(params: Params, loss: Tensor, lr: float, create_graph: bool,
             max_grad_norm: float | None = None, which: str = "all", step: int = 0) -> Params:
    """theta' = theta - lr * clip(grad loss) on the parameters ``which`` selects (:func:`adapted_names`),
    and the history gate advanced as inner step ``step`` (0-based) advances it (:func:`advance_gate`);
    returns new tensors, ``params`` is left untouched (the others are passed through as they are).

    Parameters the loss does not depend on (e.g. the critic in a policy-gradient loss) keep their value.
    The clipping scale is treated as a constant (not differentiated).
    """
    names = adapted_names(params, which)
    grads: Sequence[Tensor] = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                                  allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    if max_grad_norm is not None:
        norm = float(torch.sqrt(cast(Tensor, sum((g.detach() ** 2).sum() for g in grads))))
        grads = [g * min(1.0, max_grad_norm / (norm + 1e-6)) for g in grads]
    return advance_gate({**params, **{n: params[n] - lr * g for n, g in zip(names, grads)}}, step)


def inner_update(policy: Policy, params: Params, ep: TorchEpisodes, lr: float, create_graph: bool,
                 which: str = "all", step: int = 0) -> Params:
    """One functional policy-gradient step of the MAML inner loop (on the parameters ``which`` selects; the
    ``step``-th of the task's inner steps, 0-based)."""
    return sgd_step(params, inner_loss(policy, params, ep), lr, create_graph, which=which, step=step)


def adapt(policy: Policy, params: Params, episodes: Iterable[TorchEpisodes], lr: float,
          create_graph: bool, lr_decay: float = 1.0, which: str = "all") -> Params:
    """Apply one inner step per batch in ``episodes`` (MAML with several inner steps; step s uses
    ``lr * lr_decay**s``)."""
    return adapt_steps(policy, params, episodes, lr, create_graph, lr_decay, which=which)[0][-1]


def adapt_steps(policy: Policy, params: Params, episodes: Iterable[TorchEpisodes], lr: float,
                create_graph: bool, lr_decay: float = 1.0, dists: list[Tensor] | None = None,
                which: str = "all") -> tuple[list[Params], list[Tensor]]:
    """The parameters before and after each inner step, ``[params, theta_1, ..., theta_S]``, and each
    batch's action log-probs under the parameters it was stepped from (``logps[s]`` at ``theta_s``, (K, T)).
    ``dists``: if given, receives each batch's distribution parameters at ``theta_s``, detached."""
    thetas: list[Params] = [params]
    logps: list[Tensor] = []
    for s, ep in enumerate(episodes):
        dist = run_policy(policy, thetas[-1], ep).dist_params
        if dists is not None:
            dists.append(dist.detach())
        logps.append(log_prob(dist, ep.actions, policy.discrete))
        loss = pg_loss(logps[-1], ep.logp, ep.advantages, ep.mask)
        thetas.append(sgd_step(thetas[-1], loss, lr * lr_decay**s, create_graph, which=which, step=s))
    return thetas, logps


def outer_loss(policy: Policy, params: Params, task: TorchTaskBatch, cfg: MetaConfig) -> tuple[Tensor, dict]:
    """Post-adaptation clipped surrogate, differentiated through the inner update(s).

    ``info["adapted"]`` holds the adapted parameters (still in the graph) and ``info["pre_dist"]`` the
    distribution parameters on ``task.pre[0]`` at ``params`` (detached; None without inner steps), for
    health metrics.
    """
    dists: list[Tensor] = []
    thetas, logps = adapt_steps(policy, params, task.pre, cfg.inner_lr, not cfg.first_order, cfg.inner_lr_decay,
                                dists, cfg.inner_params)
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
                  "kl": approx_kl(logp.detach(), post.logp, post.mask), "adapted": adapted,
                  "pre_dist": dists[0] if dists else None}


def trpo_objective(policy: Policy, params: Params, tasks: list[TorchTaskBatch], cfg: MetaConfig,
                   old: list[Tensor] | None, create_graph: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
    """MAML-TRPO's meta-surrogate and mean KL(old || adapted) over the post-adaptation steps of ``tasks``.

    ``old``: per-task adapted distribution parameters (K, T, ...) at the pre-update theta (None: use the
    ones computed here, so KL == 0). ``create_graph`` keeps the inner step differentiable (second order).
    Returns ``(loss, kl, dist_params per task)``.
    """
    losses, kls, dists = [], [], []
    for i, task in enumerate(tasks):
        adapted = adapt(policy, params, task.pre, cfg.inner_lr, create_graph, cfg.inner_lr_decay, cfg.inner_params)
        post = task.post
        dist = run_policy(policy, adapted, post).dist_params
        ref = dist.detach() if old is None else old[i]
        logp = log_prob(dist, post.actions, policy.discrete)
        losses.append(pg_loss(logp, post.logp, post.advantages, post.mask))
        kls.append(masked_mean(kl_divergence(ref, dist, policy.discrete), post.mask))
        dists.append(dist.detach())
    return torch.stack(losses).mean(), torch.stack(kls).mean(), dists


# models whose third derivatives (the exact TRPO Fisher through the inner step) match finite differences
EXACT_FISHER_MODELS = ("mlp", "gru", "lstm")


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
                      lr: float, before: Tensor | None = None) -> dict[str, float]:
    """How far one inner step moved the policy on the data it was computed from.

    ``action_change``: RMS over real steps and action dims of (mean' - mean) / std (continuous; discrete:
    RMS change of the action probabilities); ``kl``: mean KL(adapted || meta); ``inner_grad/<group>``:
    norms of the inner gradient ((theta - theta') / lr; the first inner step only). ``before``: the
    distribution parameters at ``params`` on ``pre`` if already computed (else computed here).
    """
    if before is None:
        before = run_policy(policy, params, pre).dist_params
    after = run_policy(policy, adapted, pre).dist_params
    kl = masked_mean(kl_divergence(after, before, policy.discrete), pre.mask)
    if policy.discrete:
        diff = torch.softmax(after, -1) - torch.softmax(before, -1)
    else:
        (mb, lsb), (ma, _) = before.chunk(2, -1), after.chunk(2, -1)
        diff = (ma - mb) * torch.exp(-lsb)
    change = masked_mean(diff.pow(2).mean(-1), pre.mask).sqrt()
    grads = {n: (params[n] - adapted[n]) / lr for n in params if n not in (GATE, GATE_DELTAS)}
    return {"action_change": float(change), "kl": float(kl),
            **{f"inner_grad/{k}": v for k, v in group_norms(grads).items()}}


class TorchTaskBatch:
    def __init__(self, tb: TaskBatch, dtype: torch.dtype = torch.float32):
        self.pre = [ep.to_torch(dtype) for ep in tb.pre]
        self.post = tb.post.to_torch(dtype)


INFO_KEYS = ("surrogate", "value_loss", "kl")  # per-task outer-loss diagnostics, averaged over tasks


@dataclass
class TaskGradient:
    """One task's share of the clipped learner's meta-gradient, ``grad(outer_loss_i / num_tasks)``.

    The meta-gradient is the sum of these over the meta-batch, added in task order wherever each was
    computed (the learner's process or a rollout worker: ``runtime/gradients.py``), so a sharded update
    equals the learner computing every task itself.
    """

    grads: list[Tensor | None]  # per parameter, in ``policy_params`` order; None: the loss does not use it
    info: dict[str, Tensor]  # INFO_KEYS, 0-dim (read back once per update)
    health: dict[str, float]  # inner-step health (first outer step only; else empty)


def task_health(policy: Policy, params: Params, task: TorchTaskBatch, adapted: Params, cfg: MetaConfig,
                before: Tensor | None = None) -> dict[str, float]:
    """:func:`inner_step_health` of the first inner step of ``task`` (``adapted``: after all inner steps;
    ``before``: the distribution parameters on ``task.pre[0]`` at ``params``, if known)."""
    if not task.pre:
        return {}
    if len(task.pre) > 1:  # report the first inner step only
        adapted = adapt(policy, params, task.pre[:1], cfg.inner_lr, create_graph=False, which=cfg.inner_params)
    return inner_step_health(policy, params, {k: v.detach() for k, v in adapted.items()}, task.pre[0], cfg.inner_lr,
                             before)


def task_meta_gradient(policy: Policy, params: Params, task: TorchTaskBatch, cfg: MetaConfig, num_tasks: int,
                       with_health: bool) -> TaskGradient:
    """The clipped outer loss of one task, differentiated (through the inner step unless first-order) with
    respect to ``params``, scaled by ``1 / num_tasks``; the task's graph is freed on return."""
    loss, info = outer_loss(policy, params, task, cfg)
    health = task_health(policy, params, task, info["adapted"], cfg, info["pre_dist"]) if with_health else {}
    grads = torch.autograd.grad(loss / num_tasks, list(params.values()), allow_unused=True)
    return TaskGradient(list(grads), {k: info[k] for k in INFO_KEYS}, health)


def task_gradients_numpy(policy: Policy, weights: Mapping[str, np.ndarray], batches: list[TaskBatch],
                         cfg: MetaConfig, num_tasks: int, with_health: bool) -> list[dict]:
    """:func:`task_meta_gradient` of each of ``batches`` at ``weights`` (a state dict of arrays), as plain
    data for another process (:func:`task_gradient_from_numpy` reads it back). ``policy`` is any policy of
    the learner's architecture; its parameters are overwritten."""
    policy.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in weights.items()})
    params = policy_params(policy)
    out = []
    for tb in batches:
        g = task_meta_gradient(policy, params, TorchTaskBatch(tb), cfg, num_tasks, with_health)
        out.append({"grads": [None if x is None else x.detach().numpy() for x in g.grads],
                    "info": {k: float(v) for k, v in g.info.items()}, "health": g.health})
    return out


def task_gradient_from_numpy(data: dict, dtype: torch.dtype = torch.float32) -> TaskGradient:
    """Inverse of one entry of :func:`task_gradients_numpy` (exact: float32 values round-trip)."""
    return TaskGradient([None if g is None else torch.tensor(g) for g in data["grads"]],
                        {k: torch.tensor(v, dtype=dtype) for k, v in data["info"].items()}, dict(data["health"]))


class GradientShards(Protocol):
    """Where the per-task gradients of one update come from when it is split across processes
    (``runtime/gradients.py``): ``local`` task indices are computed by the learner itself, the rest by
    ``submit`` (asynchronously) and collected by ``gather``."""

    local: list[int]

    def submit(self, weights: dict[str, np.ndarray], with_health: bool) -> Any: ...

    def gather(self, pending: Any, compute: Callable[[int], TaskGradient]) -> dict[int, TaskGradient]: ...


class GradientPool(Protocol):
    """Splits one update's tasks into :class:`GradientShards` (``start`` is called once per update)."""

    def start(self, batches: list[TaskBatch], cfg: MetaConfig) -> GradientShards: ...


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

    def __init__(self, policy: Policy, cfg: MetaConfig, gradient_pool: GradientPool | None = None):
        """``gradient_pool``: other processes that compute a share of the clipped update's per-task
        meta-gradients (the Ray runtime's rollout workers); None: this process computes them all."""
        kind = policy.cfg.kind
        if cfg.outer_optimizer == "trpo" and cfg.trpo_exact_fisher and not cfg.first_order \
                and kind not in EXACT_FISHER_MODELS:
            raise ValueError(f"trpo_exact_fisher needs third derivatives, verified only for "
                             f"{', '.join(EXACT_FISHER_MODELS)}; got model {kind!r} (use the default Fisher)")
        self.policy, self.cfg, self.gradient_pool = policy, cfg, gradient_pool
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.outer_lr)
        self.version = 0

    def update(self, batches: list[TaskBatch]) -> dict[str, float]:
        tasks = [TorchTaskBatch(b) for b in batches]
        if self.cfg.outer_optimizer == "trpo" and self.cfg.inner_steps > 0:
            logs = self._trpo_update(tasks)
        else:
            logs = self._clipped_update(tasks, batches)
        self.version += 1
        pre = np.mean([(b.pre[0] if b.pre else b.post).mean_episode_return for b in batches])
        post = np.mean([b.post.mean_episode_return for b in batches])
        return {"meta/pre_return": float(pre), "meta/post_return": float(post), **logs, **self._gate_values()}

    def _gate_values(self) -> dict[str, float]:
        """``model.history_gate``: the gate's value after 0, 1, ... inner steps (``health/gate_s``)."""
        params = policy_params(self.policy)
        if GATE_DELTAS not in params:
            return {}
        gates = params[GATE] + torch.cat([params[GATE_DELTAS].new_zeros(1), params[GATE_DELTAS].cumsum(0)])
        return {f"health/gate_{s}": g for s, g in enumerate(gates.tolist())}

    def _clipped_update(self, tasks: list[TorchTaskBatch], batches: list[TaskBatch]) -> dict[str, float]:
        params = policy_params(self.policy)
        plist = list(params.values())
        shards = self.gradient_pool.start(batches, self.cfg) if self.gradient_pool is not None else None
        # detached tensors, read back once at the end (one host sync per update on a GPU learner)
        logs: dict[str, list[Tensor]] = {k: [] for k in (*INFO_KEYS, "grad_norm")}
        health, grads = [], []
        for step in range(self.cfg.outer_steps):
            self.optimizer.zero_grad(set_to_none=True)
            per_task = self._task_gradients(params, tasks, step == 0, shards)
            for j, p in enumerate(plist):  # the meta-gradient: per-task gradients added in task order
                for g in per_task:
                    gj = g.grads[j]
                    if gj is not None:
                        p.grad = gj.clone() if p.grad is None else p.grad.add_(gj)
            for g in per_task:
                for k in INFO_KEYS:
                    logs[k].append(g.info[k])
                if step == 0:
                    health.append(g.health)
            grads.append(group_norms({n: p.grad for n, p in self.policy.named_parameters()}))
            gn = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
            logs["grad_norm"].append(gn.detach())
            self.optimizer.step()
        means = torch.stack([torch.stack(v).float().mean() for v in logs.values()]).tolist()
        out = {f"meta/{k}": m for k, m in zip(logs, means)}
        out["health/clipped_frac"] = float(np.mean([g > self.cfg.max_grad_norm for g in
                                                    torch.stack(logs["grad_norm"]).tolist()]))
        return {**out, **_mean_dicts(health, "health/"), **_mean_dicts(grads, "grad/")}

    def _task_gradients(self, params: Params, tasks: list[TorchTaskBatch], with_health: bool,
                        shards: GradientShards | None) -> list[TaskGradient]:
        """Every task's :class:`TaskGradient` at the current parameters, in task order: computed here, or
        partly by ``shards`` (their tasks run in the other processes while this one computes its own)."""
        def compute(i: int) -> TaskGradient:
            return task_meta_gradient(self.policy, params, tasks[i], self.cfg, len(tasks), with_health)

        if shards is None:
            return [compute(i) for i in range(len(tasks))]
        pending = shards.submit(self.get_weights(), with_health)
        out = {i: compute(i) for i in shards.local}
        out.update(shards.gather(pending, compute))
        return [out[i] for i in range(len(tasks))]

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
        step = scale_to_kl_boundary(s, fvp(s).detach(), cfg.trpo_max_kl)
        health = [task_health(policy, params, t, adapt(policy, params, t.pre, cfg.inner_lr, False, cfg.inner_lr_decay,
                                                       cfg.inner_params), cfg) for t in tasks]
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
