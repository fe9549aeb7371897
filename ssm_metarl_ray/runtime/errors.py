"""Errors of the Ray runtime (no Ray import, so the CLI can catch them cheaply)."""

from __future__ import annotations


class RayRuntimeError(RuntimeError):
    """Base class: the CLI reports these as one line."""


class RuntimeSetupError(RayRuntimeError):
    """Ray could not be started or reached (bad --address, auth mismatch, ...)."""


class SamplingError(RayRuntimeError):
    """Rollout workers failed or hung more often than the runtime tolerates; the message says which."""


class ActorDiedError(RayRuntimeError):
    """An actor whose state cannot be rebuilt (the learner) died; the message says how to continue."""


class ActorCallTimeout(RayRuntimeError, TimeoutError):
    """A call to one of the runtime's actors did not return in time."""


class SweepSetupError(ValueError):
    """A Tune sweep that cannot start (nothing to resume, a trial larger than the cluster); the CLI
    prints it as one line, exit code 2."""
