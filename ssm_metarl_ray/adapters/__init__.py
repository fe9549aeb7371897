"""Test-time adaptation to a held-out task, one adapter per evaluation mode.

``standard`` (:class:`~ssm_metarl_ray.adapters.standard.StandardAdapter`: gradient steps on the task's
own episodes), ``hybrid`` (:class:`~ssm_metarl_ray.adapters.hybrid.HybridAdapter`: plus a replay loss on
stored experience) and ``in-context`` (``adapters.in_context.InContextAdapter``: no gradient steps, the
recurrent state adapts); :func:`make_adapter` picks one.
"""

from __future__ import annotations

from ssm_metarl_ray.adapters.hybrid import HybridAdapter
from ssm_metarl_ray.adapters.standard import StandardAdapter
from ssm_metarl_ray.config import AdaptConfig
from ssm_metarl_ray.models.policy import Policy
from ssm_metarl_ray.replay.buffer import ExperienceBuffer


def make_adapter(mode: str, policy: Policy, cfg: AdaptConfig, buffer: ExperienceBuffer | None = None,
                 horizon: int = 0, seed: int = 0, episodes_per_trial: int = 1, episodes_per_row: int = 1):
    """The adapter of an evaluation mode: standard, hybrid (gradient steps) or in-context (trials of
    ``episodes_per_trial`` episodes, ``cfg.episodes_per_step`` trials per task). ``episodes_per_row`` > 1:
    the gradient adapters' batches hold trials (method in-context-maml; the sampler collects them)."""
    if mode == "in-context":
        from ssm_metarl_ray.adapters.in_context import InContextAdapter

        return InContextAdapter(policy, cfg.episodes_per_step, episodes_per_trial)
    if mode == "standard":
        return StandardAdapter(policy, cfg)
    if mode == "hybrid":
        if buffer is None:
            raise ValueError("hybrid adaptation needs an ExperienceBuffer")
        return HybridAdapter(policy, cfg, buffer, horizon, seed, episodes_per_row=episodes_per_row)
    raise ValueError(f"unknown adaptation mode {mode!r}; allowed: standard, hybrid, in-context")


__all__ = ["HybridAdapter", "StandardAdapter", "make_adapter"]
