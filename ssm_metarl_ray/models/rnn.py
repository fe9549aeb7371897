"""Stacked LSTM and GRU cores with per-step episode resets.

Cell math is written out with plain tensor ops (PyTorch gate layout), so the cores work under
``torch.func.functional_call`` and are differentiable twice on any device. Resets cannot be expressed
in a fused ``nn.LSTM``/``nn.GRU`` call, so ``forward_sequence`` is a Python loop over ``x.unbind(1)``
(never ``x[:, t]``, whose backward is O(T^2) - ssm-notes §3.4). It runs layer by layer: the input
projection of a whole layer is one GEMM over all T steps, and only the recurrent GEMM is stepped.
Resets multiply the state by ``1 - done_t`` (computed once per sequence), and only at the steps where
some row has a reset (multiplying by one changes neither values nor gradients).

``step`` without autograd (rollouts under ``torch.no_grad()``) runs each layer as one ATen
``lstm_cell`` / ``gru_cell`` call (same gate math, one Python call instead of ~15) and skips the
reset when no row is done.

States (each tensor (B, H)):

* ``lstm``: tuple of ``num_layers`` pairs ``(h, c)``;
* ``gru``: tuple of ``num_layers`` tensors ``h``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm_metarl_ray.models.base import State, reset_state
from ssm_metarl_ray.models.fast_step import no_autograd


class _RecurrentCore(nn.Module):
    gates: int = 1  # gate blocks per cell (4 for LSTM, 3 for GRU)

    def __init__(self, input_dim: int, hidden_size: int = 64, num_layers: int = 2):
        super().__init__()
        self.input_dim, self.hidden_size, self.num_layers = input_dim, hidden_size, num_layers
        self.output_dim = hidden_size
        H, G = hidden_size, self.gates
        self.weight_ih = nn.ParameterList()
        self.weight_hh = nn.ParameterList()
        self.bias_ih = nn.ParameterList()
        self.bias_hh = nn.ParameterList()
        bound = 1.0 / math.sqrt(H)
        for layer in range(num_layers):
            d = input_dim if layer == 0 else H
            self.weight_ih.append(nn.Parameter(torch.empty(G * H, d).uniform_(-bound, bound)))
            self.weight_hh.append(nn.Parameter(torch.empty(G * H, H).uniform_(-bound, bound)))
            self.bias_ih.append(nn.Parameter(torch.empty(G * H).uniform_(-bound, bound)))
            self.bias_hh.append(nn.Parameter(torch.empty(G * H).uniform_(-bound, bound)))

    def _zeros(self, batch_size: int) -> Tensor:
        p = self.weight_hh[0]
        return torch.zeros(batch_size, self.hidden_size, dtype=p.dtype, device=p.device)

    def _cell(self, layer: int, gi: Tensor, s):
        """gi = x W_ih^T + b_ih (B, G*H) precomputed, s = this layer's state -> (h (B, H), new s)."""
        raise NotImplementedError

    def _fused_cell(self, x: Tensor, s, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor):
        """The whole cell as one ATen call (no-autograd step path) -> (h, new s)."""
        raise NotImplementedError

    def _layer_params(self):
        """(w_ih, w_hh, b_ih, b_hh) per layer, read from the ``ParameterList``s' ``_parameters`` dicts
        (where ``functional_call`` puts substitutes too) without ``nn.Module.__getattr__``."""
        m = self._modules
        return zip(*(m[n]._parameters.values() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))

    def step(self, x_t: Tensor, state: State, done_t: Tensor | None) -> tuple[Tensor, State]:
        if no_autograd(x_t):
            if done_t is not None and bool(done_t.any()):
                state = reset_state(state, done_t)
            x, new_state = x_t, []
            for s, params in zip(state, self._layer_params()):
                x, s = self._fused_cell(x, s, *params)
                new_state.append(s)
            return x, tuple(new_state)
        state = reset_state(state, done_t)
        x, new_state = x_t, []
        for layer, s in enumerate(state):
            x, s = self._cell(layer, F.linear(x, self.weight_ih[layer], self.bias_ih[layer]), s)
            new_state.append(s)
        return x, tuple(new_state)

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        d = dones.to(x.dtype)
        keep = (1.0 - d).unsqueeze(-1).unbind(1)  # T x (B, 1)
        if torch._C._functorch.is_functorch_wrapped_tensor(d):
            any_reset = [True] * len(keep)
        else:  # skip the state mask at steps where no row resets (x * 1 == x, same gradients)
            any_reset = (d != 0).any(0).tolist()
        new_state = []
        for layer, s in enumerate(state):
            gi = F.linear(x, self.weight_ih[layer], self.bias_ih[layer])  # (B, T, G*H) one GEMM
            outs = []
            for gi_t, k_t, r_t in zip(gi.unbind(1), keep, any_reset):
                if r_t:
                    s = _mask(s, k_t)
                h, s = self._cell(layer, gi_t, s)
                outs.append(h)
            x = torch.stack(outs, dim=1)  # (B, T, H)
            new_state.append(s)
        return x, tuple(new_state)

    def forward(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.forward_sequence(x, state, dones)


def _mask(s, keep: Tensor):
    """State (tensor or tuple of tensors, each (B, H)) times keep (B, 1)."""
    return tuple(t * keep for t in s) if isinstance(s, tuple) else s * keep


class LSTMCore(_RecurrentCore):
    """Stacked LSTM; state ``((h, c), ...)`` per layer. Gate order i, f, g, o as in ``nn.LSTM``."""

    gates = 4

    def initial_state(self, batch_size: int) -> State:
        return tuple((self._zeros(batch_size), self._zeros(batch_size)) for _ in range(self.num_layers))

    def _cell(self, layer: int, gi: Tensor, s):
        h, c = s
        gates = gi + F.linear(h, self.weight_hh[layer], self.bias_hh[layer])
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def _fused_cell(self, x, s, w_ih, w_hh, b_ih, b_hh):
        h, c = torch.lstm_cell(x, s, w_ih, w_hh, b_ih, b_hh)
        return h, (h, c)


class GRUCore(_RecurrentCore):
    """Stacked GRU; state ``(h, ...)`` per layer. Gate order r, z, n as in ``nn.GRU``."""

    gates = 3

    def initial_state(self, batch_size: int) -> State:
        return tuple(self._zeros(batch_size) for _ in range(self.num_layers))

    def _cell(self, layer: int, gi: Tensor, h: Tensor):
        gh = F.linear(h, self.weight_hh[layer], self.bias_hh[layer])
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)  # = (1 - z) * n + z * h
        return h, h

    def _fused_cell(self, x, s, w_ih, w_hh, b_ih, b_hh):
        h = torch.gru_cell(x, s, w_ih, w_hh, b_ih, b_hh)
        return h, h
