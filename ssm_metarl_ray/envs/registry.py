"""Task-family registry: short names -> env classes, ``make_env`` and gymnasium ids.

Classes are imported lazily (a :class:`Family` holds an ``"module:Class"`` entry point), so building
``navigation-2d`` never imports MuJoCo. Every env enforces its own horizon, so neither
:func:`make_env` nor the gymnasium registration adds a ``TimeLimit`` wrapper.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from ssm_metarl_ray.envs.base import MetaEnv


class UnknownEnvError(ValueError):
    """Raised by :func:`make_env` for a name that is not a registered task family."""


@dataclass(frozen=True)
class Family:
    """A registered task family: ``entry_point`` is ``"module:Class"``, loaded on first use."""

    name: str
    entry_point: str
    description: str
    gym_id: str
    mujoco: bool = False

    @property
    def cls(self) -> type[MetaEnv]:
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)

    def make(self, **kwargs: Any) -> MetaEnv:
        return self.cls(**kwargs)


_PKG = "ssm_metarl_ray.envs"
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "navigation-2d",
            f"{_PKG}.navigation:Navigation2DEnv",
            "MAML 2017 point robot: reach a goal in U[-0.5,0.5]^2, r = -distance, H 100 (no MuJoCo)",
            "ssm_metarl_ray/Navigation2D-v0",
        ),
        Family(
            "cartpole-physics",
            f"{_PKG}.cartpole_physics:CartPolePhysicsEnv",
            "CartPole with sampled pole length/mass, cart mass and gravity, H 200 (no MuJoCo)",
            "ssm_metarl_ray/CartPolePhysics-v0",
        ),
        Family(
            "halfcheetah-vel",
            f"{_PKG}.half_cheetah:HalfCheetahVelEnv",
            "HalfCheetah-v5 goal velocity U[0,2], maml2017 profile, H 200",
            "ssm_metarl_ray/HalfCheetahVel-v0",
            mujoco=True,
        ),
        Family(
            "halfcheetah-dir",
            f"{_PKG}.half_cheetah:HalfCheetahDirEnv",
            "HalfCheetah-v5 forward/backward, maml2017 profile, H 200",
            "ssm_metarl_ray/HalfCheetahDir-v0",
            mujoco=True,
        ),
        Family(
            "ant-dir",
            f"{_PKG}.ant:AntDirEnv",
            "Ant-v5 forward/backward with contact forces, maml2017 profile, H 200",
            "ssm_metarl_ray/AntDir-v0",
            mujoco=True,
        ),
        Family(
            "ant-goal",
            f"{_PKG}.ant:AntGoalEnv",
            "Ant-v5 reach a goal in a disc of radius 3, ProMP/PEARL profile, H 200",
            "ssm_metarl_ray/AntGoal-v0",
            mujoco=True,
        ),
    )
}
GYM_IDS: dict[str, str] = {name: f.gym_id for name, f in FAMILIES.items()}


def env_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownEnvError(f"unknown env {name!r}; allowed: {', '.join(FAMILIES)}") from None


def make_env(name: str, **kwargs: Any) -> MetaEnv:
    """Build the task family ``name`` (e.g. ``"navigation-2d"``); ``kwargs`` go to its constructor."""
    return get_family(name).make(**kwargs)


def register_gym_ids() -> None:
    """Register every family with gymnasium (idempotent); ``max_episode_steps`` is left unset."""
    for f in FAMILIES.values():
        if f.gym_id not in gym.registry:
            gym.register(id=f.gym_id, entry_point=f.entry_point)
