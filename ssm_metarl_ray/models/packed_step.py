"""Rollout step with the policy's weights packed once per rollout (no autograd), beside ``Policy.step``.

``Policy.step`` (the reference, differentiable) runs each module as written. A rollout calls it hundreds
of times with the same weights, so :class:`PackedStep` packs them once, at the start of the rollout:

* heads: actor, log-std and critic in ONE ``addmm`` -- the packed weight is ``[W_actor; 0; W_critic]`` and
  its bias ``[b_actor; log_std; b_critic]``, so the output row is ``[mean, log_std, value]``; with hidden
  head layers the first layers are stacked and the second ones block-diagonal;
* SSM layers in a real-valued form: the state is ``view_as_real(h)`` flattened, (B, 2P) with interleaved
  ``[Re h_0, Im h_0, Re h_1, ...]``, and ``h_t = lambda * h_{t-1} + gamma B u_t`` becomes
  ``h_t = h_{t-1} @ Lambda^T + u_t @ (gamma B)^T`` with ``Lambda`` the (2P, 2P) block-diagonal matrix of
  the 2x2 rotation-scalings ``[[Re l, -Im l], [Im l, Re l]]``: two GEMMs and no complex views;
* every weight pre-transposed, so each linear map is one ``mm``/``addmm`` call;
* biases kept as (1, out) rows: ``addmm`` adds a (1, out) bias to one row without the broadcast that a
  (out,) bias takes (a throwaway timing: 1.9 vs 2.2 us at batch 1, level at 8 and 64 rows);
* at small batch (``B <= small_batch_max``, where each call's dispatch costs more than its arithmetic) a
  fused SSM layer: the state is ``z_t = [h_t, y_t]`` (B, 2P + H) and ONE ``mm`` gives it,
  ``z_t = [u_t, h_{t-1}] @ [[(gamma B)^T, (gamma B)^T C^T + diag(D)], [Lambda^T, Lambda^T C^T]]``
  (the readout ``y_t = C h_t + D u_t`` computed from ``h_{t-1}`` and ``u_t`` directly; a ``cat`` and an
  ``mm`` cost less than an ``mm`` and an ``addmm``), and the GLU reads ``gelu(y_t)``: seven calls per layer
  instead of nine, but larger GEMMs, so it pays only at small batches: up to ``SMALL_BATCH_MAX`` = 16 rows
  (``benchmarks/step_processes.py``: ``ssm/packed`` against ``ssm/packed-unfused`` at B = 1, 4, 16, 32, 64).
  The intermediates go to buffers made once (``out=``), and the GEMMs read column views of them
  (``[u_t, h_{t-1}]`` of ``[u_t, h_{t-1}, y_{t-1}]``, ``gelu(y_t)`` of ``gelu(z_t)``), so no weight carries
  zero rows: at batch 1 a GEMM streams its whole weight, and zero rows were 40% of a fused layer's (with
  them the fused form paid at batch 1 only, and the SSM's step was 0.96x the LSTM's there:
  ``benchmarks/results/model_speed_2026-12-06_before.json``).

Other cores step with their own ``step`` (their fast paths) under the packed heads. The state of a packed
SSM step is real; :meth:`PackedStep.policy_state` converts it back to ``Policy.step``'s complex tuple.
The packing functions take parameter dicts whose tensors may carry leading group axes, so
``models/grouped_step.py`` packs G parameter sets with them. ``tests/test_models.py::
test_packed_step_equals_policy_step`` checks outputs and states against ``Policy.step`` for every model,
with episode resets. Rebuild the ``PackedStep`` after the weights change.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ssm_metarl_ray.models.base import State
from ssm_metarl_ray.models.policy import GATE, Policy, PolicyOutput
from ssm_metarl_ray.models.ssm import SSMCore, _complex_dtype

Params = dict[str, Tensor]
# F.glu without its Python wrapper and argument checks (the same kernel), on the rollout hot path
# (typed Any: the stubs do not list the ``out=`` these builtins take)
_glu: Any = torch._C._nn.glu
_gelu: Any = torch._C._nn.gelu  # F.gelu is this builtin; bound once


def rotation_matrix(lam: Tensor) -> Tensor:
    """lambda (..., P) complex -> Lambda^T (..., 2P, 2P) real, with ``view_as_real(lambda * h)`` flattened
    equal to ``h_r @ Lambda^T`` for the interleaved real form ``h_r`` (.., 2P) of ``h`` (.., P)."""
    lr, li = lam.real, lam.imag
    zero = torch.zeros_like(li)
    diag = torch.stack([lr, lr], -1).flatten(-2)  # (..., 2P): [2p, 2p] and [2p+1, 2p+1] = Re l_p
    above = torch.stack([li, zero], -1).flatten(-2)[..., :-1]  # [2p, 2p+1] = Im l_p
    below = torch.stack([-li, zero], -1).flatten(-2)[..., :-1]  # [2p+1, 2p] = -Im l_p
    return torch.diag_embed(diag) + torch.diag_embed(above, 1) + torch.diag_embed(below, -1)


def _t(w: Tensor) -> Tensor:
    return w.transpose(-1, -2).contiguous()


def pack_heads(p: Params, discrete: bool, head_hidden: int,
               core_width: int = 0) -> tuple[list[tuple[Tensor, Tensor]], int]:
    """Actor, log-std and critic as a chain of (bias (..., out), weight^T (..., in, out)) links for
    ``addmm`` (tanh between two links); output columns ``[actor, log_std (continuous only), value]``.
    With ``model.history_gate`` (``p`` holds the gate, () or (G,)) the first links' weights on the core's
    output (the first ``core_width`` input columns) are multiplied by it, as ``Policy.gated`` multiplies the
    output. Returns (chain, index of the value column)."""
    first = ("actor.0", "critic.0") if head_hidden else ("actor", "critic")

    def w(name: str) -> Tensor:
        if GATE in p and name in first:
            weight, gate = p[name + ".weight"], p[GATE][..., None, None]
            return torch.cat([weight[..., :core_width] * gate, weight[..., core_width:]], -1)
        return p[name + ".weight"]

    def b(name: str) -> Tensor:
        return p[name + ".bias"]

    if head_hidden:  # stacked first layers, then block-diagonal second layers
        chain = [(torch.cat([b("actor.0"), b("critic.0")], -1), _t(torch.cat([w("actor.0"), w("critic.0")], -2)))]
        wa = F.pad(w("actor.2"), (0, head_hidden))  # reads the actor's hidden units only
        wc = F.pad(w("critic.2"), (head_hidden, 0))  # reads the critic's
        ba, bc = b("actor.2"), b("critic.2")
    else:
        chain, wa, wc, ba, bc = [], w("actor"), w("critic"), b("actor"), b("critic")
    rows_w, rows_b = [wa], [ba]
    if not discrete:
        log_std = p["log_std"]
        rows_w.append(torch.zeros(log_std.shape + wa.shape[-1:], dtype=wa.dtype, device=wa.device))
        rows_b.append(log_std)
    rows_w.append(wc)
    rows_b.append(bc)
    chain.append((torch.cat(rows_b, -1), _t(torch.cat(rows_w, -2))))
    return chain, chain[-1][0].shape[-1] - 1


def pack_ssm_layer(p: Params, q: str, state_size: int) -> tuple[Tensor, ...]:
    """The ``LRULayer`` under prefix ``q`` for :func:`ssm_layer_step`: (LayerNorm weight, bias,
    (gamma B)^T (..., H, 2P), Lambda^T (..., 2P, 2P), C^T (..., 2P, H), D, GLU bias, GLU weight^T (..., H, 2H))."""
    P = state_size
    lam = torch.exp(torch.complex(-torch.exp(p[q + "nu_log"]), torch.exp(p[q + "theta_log"])))  # (..., P)
    B = p[q + "B"]  # (..., 2P, H), rows interleaved Re/Im per mode
    Bg = (B.unflatten(-2, (P, 2)) * torch.exp(p[q + "gamma_log"])[..., None, None]).flatten(-3, -2)
    return (p[q + "norm.weight"], p[q + "norm.bias"], _t(Bg), rotation_matrix(lam), _t(p[q + "C"]), p[q + "D"],
            p[q + "glu.bias"], _t(p[q + "glu.weight"]))


def fuse_ssm_layer(layer: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A :func:`pack_ssm_layer` tuple (no group axes) -> the small-batch form for :meth:`PackedStep._ssm_fused`:
    (LayerNorm weight, bias, W (H + 2P, 2P+H) = [W_u; W_h], GLU bias (1, 2H), GLU weight^T (H, 2H)), with
    ``W_u`` the map from ``u_t`` and ``W_h`` the one from ``h_{t-1}`` to ``z_t = [h_t, y_t]``."""
    nw, nb, BgT, LamT, CT, D, gb, gwT = layer
    Wu = torch.cat([BgT, BgT @ CT + torch.diag(D)], 1)
    Wh = torch.cat([LamT, LamT @ CT], 1)
    return nw, nb, torch.cat([Wu, Wh], 0), _row(gb), gwT.contiguous()


def _row(b: Tensor) -> Tensor:
    """A bias (out,) as a (1, out) row (module docstring)."""
    return b.unsqueeze(0).contiguous()


SMALL_BATCH_MAX = 16  # largest batch that uses the fused SSM layer (see the module docstring)


class PackedStep:
    """``Policy.step`` for rollouts, with the weights of ``policy`` as they are now packed once.

    ``small_batch_max``: SSM states made by :meth:`initial_state` for at most this many rows take the fused
    small-batch layout (module docstring); ``step`` follows the layout of the state it is given."""

    def __init__(self, policy: Policy, small_batch_max: int = SMALL_BATCH_MAX):
        self.policy, self.small_batch_max = policy, small_batch_max
        p = {k: v.detach() for k, v in policy.named_parameters()}
        chain, self.value_col = pack_heads(p, policy.discrete, policy.cfg.head_hidden, policy.core.output_dim)
        self.heads = [(_row(b), wT) for b, wT in chain]
        core: Any = policy.core
        self.ssm = isinstance(core, SSMCore)
        if self.ssm:
            self.H, self.P, self.eps = core.hidden_size, core.state_size, core.out_norm.eps
            self.enc_b, self.enc_wT = _row(p["core.encoder.bias"]), _t(p["core.encoder.weight"])
            self.pre = ((_row(p["core.input_mlp.bias"]), _t(p["core.input_mlp.weight"]))
                        if core.input_mlp is not None else None)  # the tanh input layer, if any
            packed = [pack_ssm_layer(p, f"core.layers.{i}.", self.P) for i in range(len(core.layers))]
            self.layers = [_row_glu_bias(layer) for layer in packed]
            self.shape = [self.H]  # LayerNorm's normalized_shape
            self.out_norm = (p["core.out_norm.weight"], p["core.out_norm.bias"])
            self.fused = [fuse_ssm_layer(layer) for layer in packed] if small_batch_max > 0 else []
            self._scratch: dict[int, tuple[Tensor, list[tuple[Tensor, ...]]]] = {}

    def initial_state(self, batch_size: int) -> State:
        if not self.ssm:
            return self.policy.initial_state(batch_size)
        w = self.enc_wT
        width = 2 * self.P + (self.H if batch_size <= self.small_batch_max else 0)
        return tuple(torch.zeros(batch_size, width, dtype=w.dtype, device=w.device) for _ in self.layers)

    def policy_state(self, state: State) -> State:
        """This step's state in ``Policy.step``'s form (the SSM's complex tuple)."""
        if not self.ssm:
            return state
        cdtype = _complex_dtype(self.enc_wT.dtype)  # (the fused layout's state is [h, y]: h first)
        return tuple(torch.view_as_complex(h[:, :2 * self.P].reshape(h.shape[0], self.P, 2).contiguous()).to(cdtype)
                     for h in cast("tuple[Tensor, ...]", state))

    def step(self, inputs_t: Tensor, state: State, done_t: Tensor | None) -> tuple[PolicyOutput, State]:
        """inputs_t (B, D), done_t (B,) or None (no row done) -> (PolicyOutput (B, ...), state), as
        ``Policy.step``."""
        x = self.policy.core_input(inputs_t)
        if self.ssm:
            y, state = self._ssm_core(x, state, done_t)
        elif torch.is_grad_enabled():
            with torch.no_grad():
                y, state = self.policy.core.step(x, state, done_t)
        else:  # rollouts run under no_grad: the cores' own fast step paths
            y, state = self.policy.core.step(x, state, done_t)
        y = self.policy.head_input(y, inputs_t)
        *hidden, last = self.heads
        for b, wT in hidden:
            y = torch.tanh(torch.addmm(b, y, wT))
        out = torch.addmm(last[0], y, last[1])  # (B, [actor, log_std, value])
        return PolicyOutput(out[:, :self.value_col], out[:, self.value_col]), state

    def _ssm_core(self, x_t: Tensor, state: Any, done_t: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """SSMCore.step on packed weights: x_t (B, D_in), state per layer h (B, 2P) real -> (y (B, H), state)."""
        shape, eps = self.shape, self.eps
        if self.pre is not None:
            x_t = torch.tanh(torch.addmm(self.pre[0], x_t, self.pre[1]))
        if done_t is not None and any_done(done_t):
            keep = (1.0 - done_t.to(x_t.dtype)).unsqueeze(-1)
            state = tuple(h * keep for h in state)
        if state[0].shape[1] != 2 * self.P:
            return self._ssm_fused(x_t, state)
        x = torch.addmm(self.enc_b, x_t, self.enc_wT)
        new_state = []
        for (nw, nb, BgT, LamT, CT, D, gb, gwT), h in zip(self.layers, state):
            u = torch.layer_norm(x, shape, nw, nb, eps)
            h = torch.addmm(torch.mm(u, BgT), h, LamT)  # h_t = lambda h_{t-1} + gamma B u_t, real form
            y = torch.addcmul(torch.mm(h, CT), D, u)  # Re(C h_t) + D u_t
            x = x + _glu(torch.addmm(gb, F.gelu(y, approximate="tanh"), gwT), -1)
            new_state.append(h)
        w, b = self.out_norm
        return torch.layer_norm(x, shape, w, b, eps), tuple(new_state)

    def _scratch_for(self, rows: int) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """Buffers for :meth:`_ssm_fused`'s intermediates at this batch size, made once: the encoded input
        (the residual stream, rows x H) and per fused layer ``[u_t, h_{t-1}, y_{t-1}]`` (rows, H + 2P + H)
        with its view ``[u_t, h_{t-1}]``, ``gelu(z_t)`` (rows, 2P + H) with its view ``gelu(y_t)``, the GLU's
        input (rows, 2H) and output (rows, H). They are written with ``out=`` (at batch 1 that costs less
        than a fresh tensor per call) and never returned: states and outputs stay fresh tensors. So one
        ``PackedStep`` serves one thread at a time."""
        bufs = self._scratch.get(rows)
        if bufs is None:
            new, H, P2 = self.enc_wT.new_empty, self.H, 2 * self.P
            layers: list[tuple[Tensor, ...]] = []
            for _ in self.fused:
                uz, g = new(rows, H + P2 + H), new(rows, P2 + H)
                layers.append((uz, uz[:, :H + P2], g, g[:, P2:], new(rows, 2 * H), new(rows, H)))
            bufs = self._scratch[rows] = (new(rows, H), layers)
        return bufs

    def _ssm_fused(self, x_t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The layers of :meth:`_ssm_core` in the fused small-batch form: x_t (B, D_in) (after the input
        layer), state per layer z = [h, y] (B, 2P + H) -> (y (B, H), state)."""
        shape, eps = self.shape, self.eps
        cat, mm, addmm, layer_norm = torch.cat, torch.mm, torch.addmm, torch.layer_norm  # locals: no global lookups
        x, layer_bufs = self._scratch_for(x_t.shape[0])
        x = addmm(self.enc_b, x_t, self.enc_wT, out=x)  # the residual stream, added to in place
        new_state = []
        for (nw, nb, W, gb, G), z, (uz, uh, g, gy, a, o) in zip(self.fused, state, layer_bufs):
            cat([layer_norm(x, shape, nw, nb, eps), z], 1, out=uz)
            z = mm(uh, W)  # [u_t, h_{t-1}] -> z_t = [h_t, Re(C h_t) + D u_t]
            _gelu(z, approximate="tanh", out=g)
            x.add_(_glu(addmm(gb, gy, G, out=a), -1, out=o))  # x + GLU(gelu(y_t))
            new_state.append(z)
        w, b = self.out_norm
        return layer_norm(x, shape, w, b, eps), tuple(new_state)


def _row_glu_bias(layer: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A :func:`pack_ssm_layer` tuple with its GLU bias as a (1, 2H) row."""
    return (*layer[:6], _row(layer[6]), layer[7])


def any_done(done_t: Tensor) -> bool:
    """``bool(done_t.any())``, through numpy for CPU tensors (one torch call less per step)."""
    return bool(done_t.numpy().any()) if done_t.device.type == "cpu" else bool(done_t.any())
