"""Task families (see :mod:`ssm_metarl_ray.envs.registry`); importing this registers the gymnasium ids."""

from ssm_metarl_ray.envs.base import MetaEnv, Task, task_splits
from ssm_metarl_ray.envs.registry import (
    BASE_IDS,
    FAMILIES,
    GYM_IDS,
    UnknownEnvError,
    env_names,
    make_env,
    register_gym_ids,
    resolve_env,
    task_family,
)

register_gym_ids()

__all__ = [
    "Task",
    "MetaEnv",
    "task_splits",
    "make_env",
    "env_names",
    "FAMILIES",
    "UnknownEnvError",
    "GYM_IDS",
    "BASE_IDS",
    "resolve_env",
    "task_family",
]
