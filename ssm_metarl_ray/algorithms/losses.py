"""Policy-gradient losses: pure functions over (K, T) tensors with a (K, T) mask of real steps."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def pg_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """Importance-weighted policy gradient (the inner-loop objective).

    -E[exp(logp - logp_old) A]; at the behaviour parameters its gradient is REINFORCE's
    -E[grad logp A], and it stays correct when the outer loop re-evaluates it at moved parameters.
    """
    ratio = torch.exp(logp - logp_old.detach())  # (K, T)
    return -masked_mean(ratio * adv, mask)


def clipped_surrogate(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, clip_eps: float) -> Tensor:
    """PPO/ProMP clipped surrogate -E[min(rA, clip(r, 1-eps, 1+eps)A)], r = exp(logp - logp_old)."""
    ratio = torch.exp(logp - logp_old.detach())
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    return -masked_mean(torch.minimum(unclipped, clipped), mask)


def value_loss(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    return 0.5 * masked_mean((values - returns) ** 2, mask)


def approx_kl(logp: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    """KL(old || new) estimate E[(r - 1) - log r] (Schulman's k3 estimator)."""
    log_ratio = logp - logp_old
    return masked_mean(torch.exp(log_ratio) - 1.0 - log_ratio, mask)
