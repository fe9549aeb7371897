"""One rollout step of G policies at once: G parameter sets (the MAML-adapted policies of G tasks), each on
its own k rows, with one call per op (batched matmuls over the group axis) instead of G calls of
``Policy.step``.

:class:`GroupedPolicy` has the rollout side of the recurrent contract (``initial_state(G * k)``,
``step(inputs (G*k, D), state, done (G*k,))`` -> ``(PolicyOutput (G*k, ...), state)``, rows ordered
group by group). For SSM and MLP cores it runs the batched step below, on weights packed once per
rollout by ``models/packed_step.py`` (heads in one ``baddbmm``; the SSM in its real form, state (G, k, 2P));
for the other cores, and as the
reference the batched step is tested against (``tests/test_models.py``), it loops over G copies of the
policy holding the groups' parameters. Rollouts only: no autograd.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ssm_metarl_ray.models.packed_step import _glu, any_done, pack_heads, pack_ssm_layer
from ssm_metarl_ray.models.policy import Policy, PolicyOutput

Params = dict[str, Tensor]


def stack_params(params: list[Params]) -> Params:
    """G parameter dicts -> one dict of (G, ...) tensors."""
    return {name: torch.stack([p[name].detach() for p in params]) for name in params[0]}


def group_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x (G, k, in), weight (G, out, in), bias (G, out) -> (G, k, out)."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _grouped(weights: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Packed weights with a leading group axis, vectors (G, n) made (G, 1, n) to broadcast over rows."""
    return tuple(w.unsqueeze(1) if w.dim() == 2 else w for w in weights)


def _ssm_core_step(packed: dict[str, Any], x_t: Tensor, state: tuple[Tensor, ...], keep: Tensor | None,
                   eps: float) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``SSMCore.step`` for G packed parameter sets (``packed_step.pack_ssm_layer``, real-form state):
    x_t (G, k, D), state: per layer h (G, k, 2P), keep (G, k, 1) or None (no row done) -> (y (G, k, H), state)."""
    if packed["pre"] is not None:  # the tanh input layer
        x_t = torch.tanh(torch.baddbmm(packed["pre"][0], x_t, packed["pre"][1]))
    x = torch.baddbmm(packed["enc_b"], x_t, packed["enc_wT"])
    H = x.shape[-1]
    new_state = []
    for (nw, nb, BgT, LamT, CT, D, gb, gwT), h in zip(packed["layers"], state):
        u = torch.addcmul(nb, torch.layer_norm(x, (H,), None, None, eps), nw)
        h = torch.baddbmm(torch.bmm(u, BgT), h if keep is None else h * keep, LamT)
        y = torch.addcmul(torch.bmm(h, CT), D, u)
        x = x + _glu(torch.baddbmm(gb, F.gelu(y, approximate="tanh"), gwT), -1)
        new_state.append(h)
    w, b = packed["out_norm"]
    return torch.addcmul(b, torch.layer_norm(x, (H,), None, None, eps), w), tuple(new_state)


def _mlp_core_step(core: Any, p: Params, pre: str, x_t: Tensor) -> Tensor:
    x = x_t
    for i, _ in enumerate(core._linears):
        q = f"{pre}net.{2 * i}."
        x = core._act(group_linear(x, p[q + "weight"], p[q + "bias"]))
    return x


class GroupedPolicy:
    """G parameter sets of one ``Policy`` stepped together; rows ``[g * k, (g + 1) * k)`` use set g."""

    BATCHED = ("ssm", "mlp")  # cores with a batched step; the others loop over G policy copies

    def __init__(self, policy: Policy, params: list[Params], batched: bool | None = None):
        self.policy, self.groups = policy, len(params)
        self.batched = policy.cfg.kind in self.BATCHED if batched is None else batched
        if self.batched:
            self.params = p = stack_params(params)
            chain, self.value_col = pack_heads(p, policy.discrete, policy.cfg.head_hidden,
                                               policy.core.output_dim)
            self.heads = [_grouped(link) for link in chain]
            if policy.cfg.kind == "ssm":
                core: Any = policy.core
                self.packed = {"enc_b": p["core.encoder.bias"].unsqueeze(1),
                               "enc_wT": p["core.encoder.weight"].transpose(1, 2).contiguous(),
                               "pre": ((p["core.input_mlp.bias"].unsqueeze(1),
                                        p["core.input_mlp.weight"].transpose(1, 2).contiguous())
                                       if core.input_mlp is not None else None),
                               "layers": [_grouped(pack_ssm_layer(p, f"core.layers.{i}.", core.state_size))
                                          for i in range(len(core.layers))],
                               "out_norm": _grouped((p["core.out_norm.weight"], p["core.out_norm.bias"]))}
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
        dtype = self.params["core.encoder.weight"].dtype
        return tuple(torch.zeros(self.groups, k, 2 * core.state_size, dtype=dtype) for _ in core.layers)

    @torch.no_grad()
    def step(self, inputs_t: Tensor, state: Any, done_t: Tensor | None) -> tuple[PolicyOutput, Any]:
        """inputs_t (G*k, D), done_t (G*k,) or None (no row done) -> (PolicyOutput (G*k, ...), state)."""
        k = self._rows_per_group(inputs_t.shape[0])
        if not self.batched:
            outs, states = [], []
            for g, (copy_g, st) in enumerate(zip(self.copies, state)):
                out_g, st = copy_g.step(inputs_t[g * k:(g + 1) * k], st,
                                        None if done_t is None else done_t[g * k:(g + 1) * k])
                outs.append(out_g)
                states.append(st)
            return PolicyOutput(torch.cat([o.dist_params for o in outs]), torch.cat([o.value for o in outs])), states
        pol, G = self.policy, self.groups
        x = pol.core_input(inputs_t.view(G, k, -1))
        if pol.cfg.kind == "mlp":
            y = _mlp_core_step(pol.core, self.params, "core.", x)
        else:
            keep = (1.0 - done_t.to(x.dtype)).view(G, k, 1) if done_t is not None and any_done(done_t) else None
            y, state = _ssm_core_step(self.packed, x, state, keep, cast(Any, pol.core).out_norm.eps)
        y = pol.head_input(y, inputs_t.view(G, k, -1))
        *hidden, last = self.heads
        for b, wT in hidden:
            y = torch.tanh(torch.baddbmm(b, y, wT))
        out = torch.baddbmm(last[0], y, last[1]).view(G * k, -1)  # (G*k, [actor, log_std, value])
        return PolicyOutput(out[:, :self.value_col], out[:, self.value_col]), state

    def _rows_per_group(self, rows: int) -> int:
        if rows % self.groups:
            raise ValueError(f"{rows} rows cannot be split into {self.groups} equal groups")
        return rows // self.groups
