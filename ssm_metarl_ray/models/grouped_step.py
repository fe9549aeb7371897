"""One rollout step of G policies at once: G parameter sets (the MAML-adapted policies of G tasks), each on
its own k rows, with one call per op (batched matmuls over the group axis) instead of G calls of
``Policy.step``.

:class:`GroupedPolicy` has the rollout side of the recurrent contract (``initial_state(G * k)``,
``step(inputs (G*k, D), state, done (G*k,))`` -> ``(PolicyOutput (G*k, ...), state)``, rows ordered
group by group). For SSM and MLP cores it runs the batched step below; for the other cores, and as the
reference the batched step is tested against (``tests/test_models.py``), it loops over G copies of the
policy holding the groups' parameters. Rollouts only: no autograd.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ssm_metarl_ray.models.policy import Policy, PolicyOutput
from ssm_metarl_ray.models.ssm import _complex_dtype

Params = dict[str, Tensor]


def stack_params(params: list[Params]) -> Params:
    """G parameter dicts -> one dict of (G, ...) tensors."""
    return {name: torch.stack([p[name].detach() for p in params]) for name in params[0]}


def group_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (G, k, in), weight (G, out, in), bias (G, out) -> (G, k, out)."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def group_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last axis with per-group affine: x (G, k, H), weight/bias (G, H)."""
    return torch.addcmul(bias.unsqueeze(1), torch.layer_norm(x, x.shape[-1:], None, None, eps), weight.unsqueeze(1))


def _ssm_core_step(core: Any, p: Params, pre: str, x_t: Tensor, state: tuple[Tensor, ...],
                   keep: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``SSMCore.step`` for G parameter sets: x_t (G, k, D), state: per layer (G, k, P) complex,
    keep (G, k, 1) or None (no row done) -> (y (G, k, H), state)."""
    G = x_t.shape[0]
    x = group_linear(x_t, p[pre + "encoder.weight"], p[pre + "encoder.bias"])
    new_state = []
    for i, (layer, h) in enumerate(zip(core.layers, state)):
        q = f"{pre}layers.{i}."
        P = layer.state_size
        lam = torch.exp(torch.complex(-torch.exp(p[q + "nu_log"]), torch.exp(p[q + "theta_log"])))  # (G, P)
        Bg = (p[q + "B"].view(G, P, 2, -1) * torch.exp(p[q + "gamma_log"]).view(G, P, 1, 1)).view(G, 2 * P, -1)
        u = group_layer_norm(x, p[q + "norm.weight"], p[q + "norm.bias"], layer.norm.eps)
        bu = torch.view_as_complex(torch.bmm(u, Bg.transpose(1, 2)).view(G, -1, P, 2))  # (G, k, P)
        decay = lam.unsqueeze(1) if keep is None else lam.unsqueeze(1) * keep
        h = torch.addcmul(bu, decay, h)
        y = torch.addcmul(torch.bmm(torch.view_as_real(h).view(G, -1, 2 * P), p[q + "C"].transpose(1, 2)),
                          p[q + "D"].unsqueeze(1), u)
        z = group_linear(F.gelu(y, approximate="tanh"), p[q + "glu.weight"], p[q + "glu.bias"])
        x = x + F.glu(z, dim=-1)
        new_state.append(h)
    n = core.out_norm
    return group_layer_norm(x, p[pre + "out_norm.weight"], p[pre + "out_norm.bias"], n.eps), tuple(new_state)


def _mlp_core_step(core: Any, p: Params, pre: str, x_t: Tensor) -> Tensor:
    x = x_t
    for i, _ in enumerate(core._linears):
        q = f"{pre}net.{2 * i}."
        x = core._act(group_linear(x, p[q + "weight"], p[q + "bias"]))
    return x


def _head(p: Params, name: str, y: Tensor, hidden: int) -> Tensor:
    if hidden == 0:
        return group_linear(y, p[name + ".weight"], p[name + ".bias"])
    z = torch.tanh(group_linear(y, p[name + ".0.weight"], p[name + ".0.bias"]))
    return group_linear(z, p[name + ".2.weight"], p[name + ".2.bias"])


class GroupedPolicy:
    """G parameter sets of one ``Policy`` stepped together; rows ``[g * k, (g + 1) * k)`` use set g."""

    BATCHED = ("ssm", "mlp")  # cores with a batched step; the others loop over G policy copies

    def __init__(self, policy: Policy, params: list[Params], batched: bool | None = None):
        self.policy, self.groups = policy, len(params)
        self.batched = policy.cfg.kind in self.BATCHED if batched is None else batched
        if self.batched:
            self.params = stack_params(params)
        else:  # the reference: G copies of the policy, each holding one parameter set
            self.copies = []
            for group in params:
                pol = copy.deepcopy(policy)
                with torch.no_grad():
                    for name, t in pol.named_parameters():
                        t.copy_(group[name])
                self.copies.append(pol)

    def initial_state(self, batch_size: int) -> Any:
        k = self._rows_per_group(batch_size)
        if not self.batched:
            return [pol.initial_state(k) for pol in self.copies]
        if self.policy.cfg.kind == "mlp":
            return ()
        core: Any = self.policy.core  # an SSMCore here
        dtype = _complex_dtype(self.params["core.encoder.weight"].dtype)
        return tuple(torch.zeros(self.groups, k, core.state_size, dtype=dtype) for _ in core.layers)

    @torch.no_grad()
    def step(self, inputs_t: Tensor, state: Any, done_t: Tensor) -> tuple[PolicyOutput, Any]:
        """inputs_t (G*k, D), done_t (G*k,) -> (PolicyOutput (G*k, ...), state)."""
        k = self._rows_per_group(inputs_t.shape[0])
        if not self.batched:
            outs, states = [], []
            for g, (copy_g, st) in enumerate(zip(self.copies, state)):
                out_g, st = copy_g.step(inputs_t[g * k:(g + 1) * k], st, done_t[g * k:(g + 1) * k])
                outs.append(out_g)
                states.append(st)
            return PolicyOutput(torch.cat([o.dist_params for o in outs]), torch.cat([o.value for o in outs])), states
        pol, p, G = self.policy, self.params, self.groups
        x = inputs_t.view(G, k, -1)[..., :pol.core_input_dim]
        if pol.cfg.kind == "mlp":
            y = _mlp_core_step(pol.core, p, "core.", x)
        else:
            keep = (1.0 - done_t.to(x.dtype)).view(G, k, 1) if bool(done_t.any()) else None
            y, state = _ssm_core_step(pol.core, p, "core.", x, state, keep)
        hidden = pol.cfg.head_hidden
        out = _head(p, "actor", y, hidden)
        if not pol.discrete:
            out = torch.cat([out, p["log_std"].unsqueeze(1).expand_as(out)], dim=-1)
        value = _head(p, "critic", y, hidden).squeeze(-1)
        return PolicyOutput(out.reshape(G * k, -1), value.reshape(G * k)), state

    def _rows_per_group(self, rows: int) -> int:
        if rows % self.groups:
            raise ValueError(f"{rows} rows cannot be split into {self.groups} equal groups")
        return rows // self.groups
