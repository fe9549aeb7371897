"""TRPO meta-update of MAML 2017: pure helpers (conjugate gradient, flat vectors, line search).

The meta-objective is the post-adaptation importance-weighted surrogate
    L(theta) = -mean_tasks E_post[ exp(logp_{theta'(theta)} - logp_old) A ],
and the trust region is the mean KL(pi_old' || pi_{theta'(theta)}) over the post-adaptation states, both
differentiated through the inner step theta' = theta - alpha grad L_pg(theta). The step solves
F s = -grad L with conjugate gradient, where F v is the Hessian-vector product of the KL (the Fisher
matrix of the adapted policies, pulled back through the inner step), scales s to the KL boundary, and
backtracks until the surrogate improves and the KL is within ``max_kl`` (Schulman et al. 2015;
Finn et al. 2017 use max KL 0.01).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def flat(tensors: list[Tensor]) -> Tensor:
    """Concatenate tensors into one vector (P,)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
    """Split a (P,) vector into tensors shaped like ``like``."""
    out, i = [], 0
    for t in like:
        out.append(vector[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out


def flat_grad(output: Tensor, inputs: list[Tensor], **kwargs) -> Tensor:
    """Gradient of a scalar ``output`` w.r.t. ``inputs`` as one (P,) vector; unused inputs get zeros."""
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return flat([torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)])


def conjugate_gradient(fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int, tol: float = 1e-10) -> Tensor:
    """Approximately solve F x = b for symmetric positive-definite F given only x -> F x; b (P,) -> x (P,)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        fp = fvp(p)
        alpha = rr / torch.dot(p, fp).clamp_min(1e-20)
        x = x + alpha * p
        r = r - alpha * fp
        rr_new = torch.dot(r, r)
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def conjugate_gradient_reference(matrix: Tensor, b: Tensor) -> Tensor:
    """Exact solve of ``matrix @ x = b`` (tests compare :func:`conjugate_gradient` against it)."""
    return torch.linalg.solve(matrix, b)


def scale_to_kl_boundary(direction: Tensor, f_direction: Tensor, max_kl: float) -> Tensor:
    """The step ``beta * direction`` (P,) whose quadratic KL model 0.5 * beta^2 * s^T F s equals ``max_kl``.

    ``f_direction`` is F s (P,). Zero when s^T F s is not positive (no descent direction to scale).
    """
    shs = torch.dot(direction, f_direction)
    if shs <= 0:
        return torch.zeros_like(direction)
    return direction * torch.sqrt(2.0 * max_kl / shs)


def line_search(evaluate: Callable[[float], tuple[float, float]], loss_before: float, max_kl: float,
                steps: int, ratio: float) -> tuple[float, float, float, int]:
    """Backtrack the step fraction 1, ratio, ratio^2, ... until the loss drops and KL <= max_kl.

    ``evaluate(fraction) -> (loss, kl)`` at theta + fraction * full_step. Returns
    ``(accepted fraction or 0.0, loss, kl, steps tried)``; fraction 0 means no step was accepted.
    """
    fraction = 1.0
    loss, kl = loss_before, 0.0
    for i in range(steps):
        loss, kl = evaluate(fraction)
        if loss < loss_before and kl <= max_kl:
            return fraction, loss, kl, i + 1
        fraction *= ratio
    return 0.0, loss_before, 0.0, steps
