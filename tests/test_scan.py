"""Chunked reset-aware scan vs the sequential reference: values, gradients, second derivatives."""

from __future__ import annotations

import pytest
import torch

from ssm_metarl_ray.models.scan import chunk_size_for, linear_scan, linear_scan_ref


def _inputs(B, T, P, complex_, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, P, generator=g, dtype=dtype) * 0.5 + 0.5
    b = torch.randn(B, T, P, generator=g, dtype=dtype)
    h0 = torch.randn(B, P, generator=g, dtype=dtype)
    if complex_:
        a = a * torch.exp(1j * torch.rand(B, T, P, generator=g, dtype=dtype) * 3)
        b = torch.complex(b, torch.randn(B, T, P, generator=g, dtype=dtype))
        h0 = torch.complex(h0, torch.randn(B, P, generator=g, dtype=dtype))
    reset = (torch.rand(B, T, generator=g) < 0.1).to(dtype)
    reset[0, 0] = 1.0  # a reset at step 0 must discard h0
    if T > 3:
        reset[1, 3] = 1.0
    return a, b, h0, reset


def _value_and_grads(fn, a, b, h0, reset, **kw):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    h = fn(a, b, h0, reset, **kw)
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(1), dtype=h.real.dtype)
    loss = (h.real * w).sum() + (h.imag * w.flip(1)).sum() if h.is_complex() else (h * w).sum()
    leaves = [a, b] + ([h0] if h0 is not None else [])
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # a_0 is unused when h0 is None
    return (h, *(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)))


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("T", [1, 2, 5, 16, 37, 100, 201])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("impl", ["function", "autograd"])
def test_fast_matches_reference(complex_, T, with_h0, impl):
    a, b, h0, reset = _inputs(3, T, 4, complex_, seed=T)
    h0 = h0 if with_h0 else None
    ref = _value_and_grads(linear_scan_ref, a, b, h0, reset)
    fast = _value_and_grads(linear_scan, a, b, h0, reset, impl=impl)
    for r, f in zip(ref, fast):
        torch.testing.assert_close(f, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 3, 7, 8, 64])
def test_explicit_chunk_sizes_including_non_divisors(chunk):
    a, b, h0, reset = _inputs(2, 50, 3, True, seed=chunk)
    ref = _value_and_grads(linear_scan_ref, a, b, h0, reset)
    fast = _value_and_grads(linear_scan, a, b, h0, reset, chunk_size=chunk)
    for r, f in zip(ref, fast):
        torch.testing.assert_close(f, r, rtol=1e-10, atol=1e-10)


def test_float32_and_broadcast_decay():
    """float32 / complex64 agree with a float64 reference; a per-mode decay (P,) broadcasts."""
    a, b, h0, reset = _inputs(4, 120, 8, True, seed=3)
    lam = a[0, 0]  # (P,) time-invariant decay, masked by the resets inside the scan
    ref = linear_scan_ref(lam, b, h0, reset)
    out = linear_scan(lam.to(torch.complex64), b.to(torch.complex64), h0.to(torch.complex64), reset.float())
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out.to(torch.complex128), ref, rtol=1e-5, atol=1e-5)
    out_r = linear_scan(a.real.float(), b.real.float(), h0.real.float(), reset.float())
    torch.testing.assert_close(out_r.double(), linear_scan_ref(a.real, b.real, h0.real, reset),
                               rtol=1e-5, atol=1e-5)


def test_reset_semantics():
    """reset_t = 1: h_t = b_t exactly, whatever came before (including h0)."""
    a, b, h0, reset = _inputs(3, 30, 2, False, seed=5)
    h = linear_scan(a, b, h0, reset)
    idx = reset.bool()
    torch.testing.assert_close(h[idx], b[idx])


def test_chunk_size_near_sqrt():
    for T in (100, 200, 1000):
        c = chunk_size_for(T)
        assert 0.4 * T ** 0.5 <= c <= 1.6 * T ** 0.5


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("impl", ["function", "autograd"])
def test_gradgradcheck(complex_, impl):
    a, b, h0, reset = _inputs(2, 7, 2, complex_, seed=11)
    a, b, h0 = (t.requires_grad_() for t in (a, b, h0))

    def f(a, b, h0):
        return linear_scan(a, b, h0, reset, chunk_size=3, impl=impl)

    assert torch.autograd.gradcheck(f, (a, b, h0))
    assert torch.autograd.gradgradcheck(f, (a, b, h0))


def test_double_backward_matches_reference():
    """Hessian-vector products through the fast scan equal those through the plain loop."""
    a, b, h0, reset = _inputs(2, 40, 3, True, seed=13)
    out = []
    for fn in (linear_scan_ref, linear_scan):
        aa, bb, hh = (t.clone().requires_grad_() for t in (a, b, h0))
        h = fn(aa, bb, hh, reset)
        loss = (h.abs() ** 2).sum()
        ga, gb, gh = torch.autograd.grad(loss, (aa, bb, hh), create_graph=True)
        second = (ga.abs() ** 2).sum() + (gb.real * 0.3).sum() + (gh.imag ** 2).sum()
        out.append(torch.autograd.grad(second, (aa, bb, hh)))
    for r, f in zip(*out):
        torch.testing.assert_close(f, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_forward_mode_matches_reference(complex_, with_h0):
    """``torch.func.jvp`` through the fast scan (its ``jvp``: the tangent is the same scan) equals forward
    mode through the reference loop, with resets, for tangents on a, b and h0."""
    from torch.func import jvp

    torch.manual_seed(4)
    dt = torch.complex128 if complex_ else torch.float64
    B, T, P = 3, 29, 5
    a, b = 0.6 * torch.randn(B, T, P, dtype=dt), torch.randn(B, T, P, dtype=dt)
    h0 = torch.randn(B, P, dtype=dt) if with_h0 else torch.zeros(B, P, dtype=dt)
    reset = (torch.rand(B, T) < 0.2).double()
    tangents = (torch.randn_like(a), torch.randn_like(b), torch.randn_like(h0))
    h_fast, t_fast = jvp(lambda x, y, z: linear_scan(x, y, z, reset), (a, b, h0), tangents)
    h_ref, t_ref = jvp(lambda x, y, z: linear_scan_ref(x, y, z, reset), (a, b, h0), tangents)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t_fast, t_ref, rtol=1e-12, atol=1e-12)
