"""Diagonal structured state-space core (LRU parameterisation, Orvieto et al. 2023; S5-style stack).

Per layer (pre-norm residual block), with u = LayerNorm(x) (B, T, H):

    lambda = exp(-exp(nu) + i*exp(theta))          (P,) complex, |lambda| < 1 for any nu
    h_t    = lambda * h_{t-1} + gamma * (B u_t)    (B, P) complex, gamma = exp(gamma_log)
    y_t    = Re(C h_t) + D * u_t                   (B, H)
    x_t   <- x_t + GLU(GELU(y_t))                  GLU(z) = W1 z * sigmoid(W2 z)

with ``h`` reset to zero before the first step of every episode (``done_t = 1``). The whole stack is
an input projection D_in -> H, ``num_layers`` blocks and a final LayerNorm.

All parameters are real tensors, so ``.double()``, Adam and ``torch.func.functional_call`` behave:
the complex B (P, H) is stored as a real (2P, H) matrix with rows interleaved [Re B_0, Im B_0, Re B_1,
...] (one GEMM, viewed as complex for free), and C (H, P) as a real (H, 2P) matrix acting on the
interleaved [Re h, Im h], i.e. ``Re(C h) = W_C @ view_as_real(h)``. State: a tuple with one complex
tensor (B, P) per layer (complex64 for a float32 model, complex128 after ``.double()``).

``step`` is O(1): an elementwise state update. ``forward_sequence`` runs the reset-aware chunked scan
of :mod:`ssm_metarl_ray.models.scan` and equals a loop of ``step``. Without autograd (rollouts) ``step``
takes the fast path of :mod:`ssm_metarl_ray.models.fast_step`, tested equal to this reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm_metarl_ray.models.base import State
from ssm_metarl_ray.models.fast_step import no_autograd, ssm_step_fast
from ssm_metarl_ray.models.scan import linear_scan


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _lambda(nu_log: Tensor, theta_log: Tensor) -> Tensor:
    return torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))


def _gamma_B(B: Tensor, gamma_log: Tensor) -> Tensor:
    """gamma folded into the rows of the real-packed B: (2P, H)."""
    P = gamma_log.shape[0]
    return (B.reshape(P, 2, -1) * torch.exp(gamma_log).view(P, 1, 1)).reshape(2 * P, -1)




class LRULayer(nn.Module):
    """One pre-norm residual block around a complex diagonal linear recurrence with ``P`` modes."""

    def __init__(self, hidden_size: int, state_size: int, r_min: float = 0.9, r_max: float = 0.999,
                 max_phase: float = math.pi / 4):
        super().__init__()
        H, P = hidden_size, state_size
        self.hidden_size, self.state_size = H, P
        self.norm = nn.LayerNorm(H)
        # Eigenvalues uniform on the ring r_min <= |lambda| <= r_max, phase uniform in [0, max_phase].
        u1, u2 = torch.rand(P), torch.rand(P)
        nu = -0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2)  # -log|lambda| > 0
        theta = (max_phase * u2).clamp_min(1e-4)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(theta))
        # gamma = sqrt(1 - |lambda|^2) keeps the state variance constant as |lambda| -> 1.
        self.gamma_log = nn.Parameter(0.5 * torch.log1p(-torch.exp(-2.0 * nu)))
        self.B = nn.Parameter(torch.randn(2 * P, H) / math.sqrt(2 * H))  # interleaved Re/Im rows
        self.C = nn.Parameter(torch.randn(H, 2 * P) / math.sqrt(P))  # acts on interleaved [Re h, Im h]
        self.D = nn.Parameter(torch.randn(H))
        self.glu = nn.Linear(H, 2 * H)

    @staticmethod
    def derive(nu_log: Tensor, theta_log: Tensor, gamma_log: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
        """(lambda (P,) complex, gamma-scaled B (2P, H)) from the raw parameters."""
        return _lambda(nu_log, theta_log), _gamma_B(B, gamma_log)

    def eigenvalues(self) -> Tensor:
        """lambda (P,) complex."""
        return _lambda(self.nu_log, self.theta_log)

    def _derived(self) -> tuple[Tensor, Tensor]:
        """(lambda (P,) complex, gamma-scaled B (2P, H)), computed once per call of the core."""
        return self.eigenvalues(), _gamma_B(self.B, self.gamma_log)

    def _input(self, x: Tensor, Bg: Tensor) -> tuple[Tensor, Tensor]:
        """x (..., H) -> (u = LayerNorm(x) (..., H), gamma * B u (..., P) complex)."""
        n = self.norm
        u = torch.layer_norm(x, (self.hidden_size,), n.weight, n.bias, n.eps)
        bu = F.linear(u, Bg)  # (..., 2P), one real GEMM for the real and imaginary parts
        return u, torch.view_as_complex(bu.view(bu.shape[:-1] + (self.state_size, 2)))

    def _output(self, x: Tensor, u: Tensor, h: Tensor) -> Tensor:
        """Readout and residual: x (..., H), u (..., H), h (..., P) complex -> (..., H)."""
        hr = torch.view_as_real(h)
        y = torch.addcmul(F.linear(hr.reshape(hr.shape[:-2] + (2 * self.state_size,)), self.C), self.D, u)
        g = self.glu
        z = F.linear(F.gelu(y, approximate="tanh"), g.weight, g.bias)
        return x + F.glu(z, dim=-1)

    def step(self, x_t: Tensor, h: Tensor, keep_t: Tensor | None) -> tuple[Tensor, Tensor]:
        """x_t (B, H), h (B, P) complex, keep_t = 1 - done_t (B, 1) or None (no row done)
        -> (x_t' (B, H), h (B, P))."""
        lam, Bg = self._derived()
        u, bu = self._input(x_t, Bg)
        h = torch.addcmul(bu, lam if keep_t is None else lam * keep_t, h)
        return self._output(x_t, u, h), h

    def forward_sequence(self, x: Tensor, h0: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, H), h0 (B, P) complex, keep = 1 - dones (B, T, 1) -> (x' (B, T, H), h_T (B, P))."""
        lam, Bg = self._derived()
        u, bu = self._input(x, Bg)
        h = linear_scan(lam * keep, bu, h0)  # (B, T, P)
        return self._output(x, u, h), h[:, -1]


class SSMCore(nn.Module):
    """Input projection -> ``num_layers`` LRU blocks -> LayerNorm. ``output_dim = hidden_size``.

    ``input_hidden > 0`` puts a tanh layer (``input_mlp``, D_in -> input_hidden) before the projection.

    State: tuple of ``num_layers`` complex tensors (B, state_size).
    """

    def __init__(self, input_dim: int, hidden_size: int = 64, num_layers: int = 2, state_size: int = 32,
                 r_min: float = 0.9, r_max: float = 0.999, max_phase: float = math.pi / 4,
                 input_hidden: int = 0):
        super().__init__()
        self.input_dim, self.hidden_size, self.state_size = input_dim, hidden_size, state_size
        self.output_dim = hidden_size
        self.input_mlp = nn.Linear(input_dim, input_hidden) if input_hidden else None
        self.encoder = nn.Linear(input_hidden or input_dim, hidden_size)
        self.layers = nn.ModuleList(
            LRULayer(hidden_size, state_size, r_min, r_max, max_phase) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(hidden_size)

    def initial_state(self, batch_size: int) -> State:
        p = self.encoder.weight
        dtype = _complex_dtype(p.dtype)
        return tuple(torch.zeros(batch_size, self.state_size, dtype=dtype, device=p.device)
                     for _ in self.layers)

    def step(self, x_t: Tensor, state: State, done_t: Tensor | None) -> tuple[Tensor, State]:
        if no_autograd(x_t):
            return ssm_step_fast(self, x_t, state, done_t)
        x = self._encode(x_t)
        keep = None if done_t is None else (1.0 - done_t.to(x.dtype)).unsqueeze(-1)  # (B, 1)
        new_state = []
        for layer, h in zip(cast("Iterable[LRULayer]", self.layers), state):
            x, h = layer.step(x, h, keep)
            new_state.append(h)
        return self._final_norm(x), tuple(new_state)

    def _encode(self, x: Tensor) -> Tensor:
        """(..., D_in) -> (..., H): [tanh layer ->] input projection."""
        if self.input_mlp is not None:
            x = torch.tanh(self.input_mlp(x))
        return self.encoder(x)

    def _final_norm(self, x: Tensor) -> Tensor:
        n = self.out_norm
        return torch.layer_norm(x, (self.hidden_size,), n.weight, n.bias, n.eps)

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        z = self._encode(x)
        keep = (1.0 - dones.to(z.dtype)).unsqueeze(-1)  # (B, T, 1)
        new_state = []
        for layer, h0 in zip(cast("Iterable[LRULayer]", self.layers), state):
            z, h = layer.forward_sequence(z, h0, keep)
            new_state.append(h)
        return self._final_norm(z), tuple(new_state)

    def forward(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]:
        return self.forward_sequence(x, state, dones)
