"""Task-family registry: short names -> env classes, ``make_env`` and gymnasium ids.

:func:`resolve_env` also accepts the gymnasium ids users of other projects know: ``CartPole-v1`` (any
version) is the environment ``cartpole-physics`` varies; ``HalfCheetah-v5`` and ``Ant-v5`` are each varied
by several families, so they name none and the error lists the choices.

Classes are imported lazily (a :class:`Family` holds an ``"module:Class"`` entry point), so building
``navigation-2d`` never imports MuJoCo. Every env enforces its own horizon, so neither
:func:`make_env` nor the gymnasium registration adds a ``TimeLimit`` wrapper.
"""

from __future__ import annotations

import importlib
import re
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
    gym_base: str | None = None  # the gymnasium env it varies, id without "-v<N>" (e.g. "CartPole")
    tasks_of: str | None = None  # the family whose tasks, rewards and published protocol it shares (the
    #   ``-rllab`` forms: the same tasks on other simulator settings); None: its own

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
            gym_base="CartPole",
        ),
        Family(
            "halfcheetah-vel",
            f"{_PKG}.half_cheetah:HalfCheetahVelEnv",
            "HalfCheetah-v5 goal velocity U[0,2], maml2017 profile, H 200",
            "ssm_metarl_ray/HalfCheetahVel-v0",
            mujoco=True,
            gym_base="HalfCheetah",
        ),
        Family(
            "halfcheetah-dir",
            f"{_PKG}.half_cheetah:HalfCheetahDirEnv",
            "HalfCheetah-v5 forward/backward, maml2017 profile, H 200",
            "ssm_metarl_ray/HalfCheetahDir-v0",
            mujoco=True,
            gym_base="HalfCheetah",
        ),
        Family(
            "ant-dir",
            f"{_PKG}.ant:AntDirEnv",
            "Ant-v5 forward/backward with contact forces, maml2017 profile, H 200",
            "ssm_metarl_ray/AntDir-v0",
            mujoco=True,
            gym_base="Ant",
        ),
        Family(
            "ant-goal",
            f"{_PKG}.ant:AntGoalEnv",
            "Ant-v5 reach a goal in a disc of radius 3, ProMP/PEARL profile, H 200",
            "ssm_metarl_ray/AntGoal-v0",
            mujoco=True,
            gym_base="Ant",
        ),
        Family(
            "halfcheetah-vel-rllab",
            f"{_PKG}.half_cheetah:HalfCheetahVelRllabEnv",
            "halfcheetah-vel on MAML 2017's rllab settings: dt 0.01 s, 20-d obs with the torso COM, H 200",
            "ssm_metarl_ray/HalfCheetahVelRllab-v0",
            mujoco=True,
            gym_base="HalfCheetah",
            tasks_of="halfcheetah-vel",
        ),
        Family(
            "halfcheetah-dir-rllab",
            f"{_PKG}.half_cheetah:HalfCheetahDirRllabEnv",
            "halfcheetah-dir on MAML 2017's rllab settings: dt 0.01 s, 20-d obs with the torso COM, H 200",
            "ssm_metarl_ray/HalfCheetahDirRllab-v0",
            mujoco=True,
            gym_base="HalfCheetah",
            tasks_of="halfcheetah-dir",
        ),
    )
}
GYM_IDS: dict[str, str] = {name: f.gym_id for name, f in FAMILIES.items()}


def _base_ids() -> dict[str, tuple[str, ...]]:
    """Gymnasium base id (no version) -> the families varying that environment, in registry order."""
    out: dict[str, tuple[str, ...]] = {}
    for f in FAMILIES.values():
        if f.gym_base:
            out[f.gym_base] = (*out.get(f.gym_base, ()), f.name)
    return out


# {"CartPole": ("cartpole-physics",), "HalfCheetah": (vel, dir), "Ant": (dir, goal)}; one: the id names it
BASE_IDS: dict[str, tuple[str, ...]] = _base_ids()
_VERSIONED = re.compile(r"(?P<base>[A-Za-z0-9_]+)-v\d+")


def env_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise UnknownEnvError(f"unknown env {name!r}; allowed: {', '.join(FAMILIES)}") from None


def task_family(name: str) -> str:
    """The family whose tasks and published numbers ``name`` shares (:attr:`Family.tasks_of`), or ``name``."""
    fam = FAMILIES.get(name)
    return fam.tasks_of or name if fam is not None else name


def families_of(name: str) -> tuple[str, ...]:
    """The families a gymnasium id names: one for this package's ids (``GYM_IDS``), the families varying
    its environment for a versioned base id (``CartPole-v1``; case-insensitive), none otherwise."""
    by_gym_id = {gym_id: fam for fam, gym_id in GYM_IDS.items()}
    if name in by_gym_id:
        return (by_gym_id[name],)
    m = _VERSIONED.fullmatch(name) if isinstance(name, str) else None
    bases = {b.lower(): fams for b, fams in BASE_IDS.items()}
    return bases.get(m["base"].lower(), ()) if m else ()


def resolve_env(name: str, label: str = "env") -> tuple[str, str | None]:
    """``(family, note)`` for a family name, one of this package's gymnasium ids, or a gymnasium id whose
    environment exactly one family varies (``CartPole-v1`` -> ``cartpole-physics``); ``note`` is a line
    saying which family runs, None for a family name. ``label`` names the input in messages (e.g. a flag).

    Raises :class:`UnknownEnvError` (a ``ValueError``) for an id several families vary (``HalfCheetah-v5``),
    listing them, and for an unknown name, listing what is allowed.
    """
    if name in FAMILIES:
        return name, None
    fams = families_of(name)
    if len(fams) == 1:
        return fams[0], f"{label} {name} runs the task family {fams[0]}"
    if fams:
        raise UnknownEnvError(f"{label} {name!r} is the environment of {len(fams)} task families; "
                              f"choose one: {', '.join(fams)}")
    bases = [f"{b}-v*" for b, f in BASE_IDS.items() if len(f) == 1]
    raise UnknownEnvError(f"unknown {label} {name!r}; allowed: {', '.join(FAMILIES)}, their gymnasium ids "
                          f"({', '.join(GYM_IDS.values())}) or {', '.join(bases)}")


def make_env(name: str, **kwargs: Any) -> MetaEnv:
    """Build the task family ``name`` (e.g. ``"navigation-2d"``); ``kwargs`` go to its constructor."""
    return get_family(name).make(**kwargs)


def register_gym_ids() -> None:
    """Register every family with gymnasium (idempotent); ``max_episode_steps`` is left unset."""
    for f in FAMILIES.values():
        if f.gym_id not in gym.registry:
            gym.register(id=f.gym_id, entry_point=f.entry_point)
