"""Reset-aware linear recurrence ``h_t = a_t * h_{t-1} + b_t`` over batch-first sequences.

Every diagonal SSM (S5, LRU, S4D in recurrent form) reduces to this scan. Shapes are batch-first:
``a`` and ``b`` are (B, T, ...) real or complex (``a`` may be anything that broadcasts to ``b``, e.g. a
per-mode decay of shape (P,)), ``h0`` is (B, ...), ``reset`` is (B, T).

Episode resets need no special operator (ssm-notes §2): ``a_t <- a_t * (1 - reset_t)`` makes
``h_t = b_t`` at the first step of a new episode, and a carried-in state enters as
``b_0 <- b_0 + a_0 * h0`` *after* masking, so a reset at step 0 discards ``h0``.

Kernels with identical semantics:

* :func:`linear_scan_ref` - a plain Python loop over ``unbind(1)`` under autograd; the test reference.
* :func:`linear_scan` - a chunked two-level scan (chunk length C ~ sqrt(T), K = ceil(T/C) chunks):
  1. scan inside every chunk from a zero state, vectorised across the K chunks (C small steps), also
     accumulating the decay products ``A_{k,c} = a_{k,0} * ... * a_{k,c}``;
  2. carry the chunk end-states across chunks (K small steps), starting from ``h0``;
  3. fix up all chunks at once: ``h_{k,c} = hloc_{k,c} + A_{k,c} * H_{k-1}``.
  About 2C + 2K small ops instead of 2T. The default ``impl="function"`` wraps it in a custom
  ``autograd.Function`` whose forward runs in place without autograd and saves only (a, h0, h); its
  backward is the same scan run backwards (through the same Function) plus elementwise ops, all
  differentiable, so it is differentiable any number of times (second-order MAML; checked by
  ``gradgradcheck``) and works with ``torch.func`` (``functional_call``, ``grad``, ``vmap``, and ``jvp``:
  its forward mode runs the same scan on the tangents).
  ``impl="autograd"`` differentiates the out-of-place chunked forward with plain autograd instead.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["linear_scan", "linear_scan_ref", "chunk_size_for"]


def _prepare(a: Tensor, b: Tensor, reset: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fold ``reset`` into ``a`` and broadcast ``a`` to the shape of ``b`` (B, T, ...)."""
    if b.dim() < 2:
        raise ValueError(f"b must be (B, T, ...), got shape {tuple(b.shape)}")
    if reset is not None:
        real_dtype = a.real.dtype if a.is_complex() else a.dtype
        keep = 1.0 - reset.to(real_dtype)
        keep = keep.reshape(tuple(keep.shape) + (1,) * (b.dim() - 2))  # (B, T, 1, ...)
        a = a * keep
    if a.shape != b.shape:
        a = torch.broadcast_to(a, b.shape)
    return a, b


def linear_scan_ref(a: Tensor, b: Tensor, h0: Tensor | None = None,
                    reset: Tensor | None = None) -> Tensor:
    """Reference: sequential loop. Returns h (B, T, ...), ``h[:, t]`` the state after step t."""
    a, b = _prepare(a, b, reset)
    outs = []
    h = h0
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = b_t if h is None else a_t * h + b_t
        outs.append(h)
    if not outs:
        return b.clone()
    return torch.stack(outs, dim=1)


@functools.lru_cache(maxsize=4096)
def chunk_size_for(T: int) -> int:
    """Chunk length minimising the op count 2C + 2*ceil(T/C) (+ a small penalty when T % C != 0).

    The result is ~sqrt(T); timings at T=200..1000 on CPU were flat for C within 2x of it.
    """
    best_c, best_cost = 1, math.inf
    for c in range(1, T + 1):
        k = -(-T // c)
        cost = 2 * c + 2 * k + (3 if k * c != T else 0)
        if cost < best_cost:
            best_c, best_cost = c, cost
    return best_c


def _chunked_scan(a: Tensor, b: Tensor, h0: Tensor | None, reverse: bool, chunk_size: int) -> Tensor:
    """Two-level chunked scan of already-prepared ``a``, ``b`` (same shape (B, T, ...)).

    ``reverse=True`` runs ``h_t = a_t * h_{t+1} + b_t`` from t = T-1 down to 0, ``h0`` entering at the
    end (used by the backward pass). Plain differentiable torch ops only.
    """
    T = b.shape[1]
    C = max(1, min(int(chunk_size), T))
    K = -(-T // C)
    Bsz, rest = b.shape[0], tuple(b.shape[2:])
    pad = K * C - T
    if pad:  # identity steps (a=1, b=0) after the real ones: harmless in both directions
        a = torch.cat([a, a.new_ones((Bsz, pad) + rest)], dim=1)
        b = torch.cat([b, b.new_zeros((Bsz, pad) + rest)], dim=1)
    a_c = a.reshape((Bsz, K, C) + rest)
    b_c = b.reshape((Bsz, K, C) + rest)

    # 1. Local scans inside every chunk from zero, vectorised over the K chunks (C steps).
    pairs = list(zip(a_c.unbind(2), b_c.unbind(2)))  # C x ((B, K, ...), (B, K, ...))
    if reverse:
        pairs.reverse()
    h_loc, A_loc = [], []
    h: Tensor | None = None
    A: Tensor | None = None
    for a_t, b_t in pairs:
        if h is None or A is None:  # both are None before the first step only
            h, A = b_t, a_t
        else:
            h = a_t * h + b_t
            A = A * a_t
        h_loc.append(h)
        A_loc.append(A)
    h_end, A_end = list(h_loc[-1].unbind(1)), list(A_loc[-1].unbind(1))  # K x (B, ...)
    if reverse:
        h_loc.reverse()
        A_loc.reverse()
    hl = torch.stack(h_loc, dim=2)  # (B, K, C, ...)
    Al = torch.stack(A_loc, dim=2)

    # 2. Carry across chunks (K steps): H_in[k] is the true state entering chunk k.
    order = range(K - 1, -1, -1) if reverse else range(K)
    H_in: list[Tensor | None] = [None] * K
    H = h0
    for k in order:
        H_in[k] = H
        H = h_end[k] if H is None else A_end[k] * H + h_end[k]
    zero = torch.zeros_like(h_end[0])
    H_in_t = torch.stack([zero if x is None else x for x in H_in], dim=1).unsqueeze(2)  # (B, K, 1, ...)

    # 3. Fix up every chunk at once.
    h_all = hl + Al * H_in_t
    return h_all.reshape((Bsz, K * C) + rest)[:, :T]


def _chunked_scan_nograd(a: Tensor, b: Tensor, h0: Tensor, reverse: bool, chunk_size: int) -> Tensor:
    """Same algorithm as :func:`_chunked_scan`, writing into preallocated buffers (no autograd)."""
    T = b.shape[1]
    C = max(1, min(int(chunk_size), T))
    K = -(-T // C)
    Bsz, rest = b.shape[0], tuple(b.shape[2:])
    pad = K * C - T
    if pad:
        a = torch.cat([a, a.new_ones((Bsz, pad) + rest)], dim=1)
        b = torch.cat([b, b.new_zeros((Bsz, pad) + rest)], dim=1)
    # Buffers start as copies of b and a, made from the inputs (not torch.empty) so that they are
    # batched under torch.func.vmap whenever an input is; each local step is then one in-place op.
    hl = torch.add(b, a, alpha=0).contiguous().view((Bsz, K, C) + rest)  # = b, a is finite
    Al = torch.empty_like(hl).copy_(a.reshape((Bsz, K, C) + rest))
    a_c, h_c, A_c = a.reshape((Bsz, K, C) + rest).unbind(2), hl.unbind(2), Al.unbind(2)
    steps = range(C - 1, -1, -1) if reverse else range(C)
    prev = None
    for c in steps:
        if prev is not None:
            h_c[c].addcmul_(a_c[c], h_c[prev])
            A_c[c].mul_(A_c[prev])
        prev = c
    assert prev is not None  # C >= 1 steps ran
    h_end, A_end = h_c[prev].unbind(1), A_c[prev].unbind(1)  # K x (B, ...)
    H_in = torch.empty_like(hl[:, :, 0], memory_format=torch.contiguous_format)  # (B, K, ...)
    H_k = H_in.unbind(1)
    order = range(K - 1, -1, -1) if reverse else range(K)
    H = h0
    for k in order:
        H_k[k].copy_(H)
        H = A_end[k] * H + h_end[k]
    hl.addcmul_(Al, H_in.unsqueeze(2))
    return hl.view((Bsz, K * C) + rest)[:, :T]


class _LinearScanFn(torch.autograd.Function):
    """Chunked scan with a hand-written backward that is itself differentiable.

    Backward (ssm-notes §5.1): ``g_t = grad_h_t + conj(a_{t+1}) g_{t+1}`` - the same scan run in the
    opposite direction through this Function again - then ``grad_a_t = g_t conj(h_{t-1})``,
    ``grad_b_t = g_t``, ``grad_h0 = conj(a_0) g_0``. Every op in ``backward`` is a differentiable
    torch op (or this Function), so ``create_graph=True`` gives exact second derivatives; only
    (a, h0, h) are saved.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, b: Tensor, h0: Tensor, reverse: bool, chunk_size: int) -> Tensor:
        return _chunked_scan_nograd(a, b, h0, reverse, chunk_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _, h0, reverse, chunk_size = inputs
        ctx.save_for_backward(a, h0, output)
        ctx.save_for_forward(a, h0, output)
        ctx.reverse, ctx.chunk_size = reverse, chunk_size

    @staticmethod
    def jvp(ctx, da: Tensor | None, db: Tensor | None, dh0: Tensor | None, _reverse, _chunk) -> Tensor:
        """Forward mode: the tangent of ``h_t = a_t h_{t-1} + b_t`` is the same scan,
        ``dh_t = a_t dh_{t-1} + (da_t h_{t-1} + db_t)``, entered with ``dh0`` (None: a zero tangent)."""
        a, h0, h = ctx.saved_tensors
        rhs = torch.zeros_like(h) if db is None else db
        if da is not None:
            first = h0.unsqueeze(1)
            h_prev = torch.cat([h[:, 1:], first], dim=1) if ctx.reverse else torch.cat([first, h[:, :-1]], dim=1)
            rhs = rhs + da * h_prev
        return _LinearScanFn.apply(a, rhs, torch.zeros_like(h0) if dh0 is None else dh0, ctx.reverse,
                                   ctx.chunk_size)

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h0, h = ctx.saved_tensors
        reverse, chunk = ctx.reverse, ctx.chunk_size
        zero_t = torch.zeros_like(a[:, :1])
        first = h0.unsqueeze(1)
        if not reverse:  # next step is t+1; previous state is h_{t-1} (h0 at t=0)
            a_next = torch.cat([a[:, 1:], zero_t], dim=1)
            h_prev = torch.cat([first, h[:, :-1]], dim=1)
        else:  # next step is t-1; previous state is h_{t+1} (h0 at t=T-1)
            a_next = torch.cat([zero_t, a[:, :-1]], dim=1)
            h_prev = torch.cat([h[:, 1:], first], dim=1)
        if a_next.is_complex():  # materialise once; a lazy conj view would be resolved in every step
            a_next = torch.conj_physical(a_next)
        g = _LinearScanFn.apply(a_next, grad_h, torch.zeros_like(h0), not reverse, chunk)
        grad_a = g * h_prev.conj() if ctx.needs_input_grad[0] else None
        grad_h0 = None
        if ctx.needs_input_grad[2]:
            grad_h0 = a[:, -1].conj() * g[:, -1] if reverse else a[:, 0].conj() * g[:, 0]
        return grad_a, g, grad_h0, None, None


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None, reset: Tensor | None = None,
                chunk_size: int | None = None, impl: str = "function") -> Tensor:
    """Fast chunked scan with the semantics of :func:`linear_scan_ref` (see the module docstring).

    a: broadcastable to b; b: (B, T, ...); h0: (B, ...) or None (zeros); reset: (B, T) or None.
    Returns h (B, T, ...). ``chunk_size`` overrides the automatic choice (~sqrt(T)).
    ``impl="function"`` (default) uses the custom twice-differentiable backward; ``"autograd"`` lets
    autograd differentiate the chunked forward directly (slower, same values).
    """
    a, b = _prepare(a, b, reset)
    T = b.shape[1]
    if T == 0:
        return b.clone()
    C = chunk_size if chunk_size is not None else chunk_size_for(T)
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    a, b = a.to(dtype), b.to(dtype)
    h0 = torch.zeros_like(b[:, 0]) if h0 is None else h0.to(dtype)
    if impl == "autograd":
        return _chunked_scan(a, b, h0, False, C)
    if impl != "function":
        raise ValueError(f"unknown impl {impl!r}; allowed: 'function', 'autograd'")
    return _LinearScanFn.apply(a.contiguous(), b.contiguous(), h0.contiguous(), False, C)
