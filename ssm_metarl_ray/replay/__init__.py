"""Replay storage for hybrid (replay-augmented) adaptation."""

from ssm_metarl_ray.replay.buffer import FIELDS, ExperienceBuffer

__all__ = ["ExperienceBuffer", "FIELDS"]
