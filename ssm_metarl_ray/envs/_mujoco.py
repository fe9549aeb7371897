"""Shared machinery of the MuJoCo task families (HalfCheetah, Ant); imported only by those modules.

:class:`MujocoMetaMixin` goes *before* a gymnasium MuJoCo env in the bases, e.g.
``class HalfCheetahVelEnv(MujocoMetaMixin, HalfCheetahEnv)``, and provides:

* **post-step physics like rllab / MuJoCo 1.x**: after the ``frame_skip`` ``mj_step`` calls it runs
  ``mj_forward`` (kinematics, contacts and constraint forces of the *new* state), then
  ``mj_rnePostConstraint`` (fills ``cfrc_ext``, which MuJoCo >= 2.0 no longer computes by default:
  the "zero contact forces" bug of openai/gym#1541) and ``mj_subtreeVel`` (fills ``subtree_linvel``,
  the centre-of-mass velocity the maml2017 rewards use). So ``xpos``, ``subtree_com``,
  ``subtree_linvel`` and ``cfrc_ext`` all describe the state the observation describes;
* actions clipped to the action space before simulation and before the control cost;
* float32 observations; its own horizon (``truncated=True`` at step ``horizon``, no TimeLimit needed);
* ``reset(options={"task": task})``; pickling (EzPickle) that keeps the constructor args and the
  current task (the simulator state is not kept: reset after unpickling).

Subclasses define ``family``, ``task_params``, ``sample_tasks``, ``_apply_task(task)`` and
``_reward(action) -> (reward, terminated, info)``.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces, utils

from ssm_metarl_ray.envs.base import MetaEnv, Task


class MujocoMetaMixin(MetaEnv):
    _gym_defaults: dict[str, Any] = {}  # constructor kwargs fixed by the family (obs layout, ...)

    def __init__(self, task: Task | None = None, horizon: int | None = None, **gym_kwargs: Any):
        kwargs = {**self._gym_defaults, **gym_kwargs}
        super().__init__(**kwargs)  # the gymnasium MuJoCo env's __init__ (next in the MRO)
        utils.EzPickle.__init__(self, task=task, horizon=horizon, **gym_kwargs)
        if horizon is not None:
            self.horizon = int(horizon)
        self._t = 0
        self._torso_id = self.model.body("torso").id
        shape = self.observation_space.shape
        self.observation_space = spaces.Box(-np.inf, np.inf, shape, np.float32)
        self._act_low = self.action_space.low.astype(np.float64)
        self._act_high = self.action_space.high.astype(np.float64)
        self.set_task(self.default_task() if task is None else task)

    # ---------------------------------------------------------------- tasks
    def set_task(self, task: Task) -> None:
        self._task = self._validate_task(task)
        self._apply_task(task)

    def get_task(self) -> Task:
        return self._task

    def _apply_task(self, task: Task) -> None:
        raise NotImplementedError

    def _reward(self, action: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        raise NotImplementedError

    # ---------------------------------------------------------------- physics
    def _post_step_physics(self) -> None:
        m, d = self.model, self.data
        mujoco.mj_forward(m, d)
        mujoco.mj_rnePostConstraint(m, d)
        mujoco.mj_subtreeVel(m, d)

    def _step_mujoco_simulation(self, ctrl, n_frames) -> None:  # overrides gymnasium's MujocoEnv
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)
        self._post_step_physics()

    @property
    def com_velocity(self) -> np.ndarray:
        """Linear velocity (3-d, world frame) of the centre of mass of the torso subtree (= whole robot)."""
        return self.data.subtree_linvel[self._torso_id].copy()

    @property
    def torso_xpos(self) -> np.ndarray:
        return self.data.xpos[self._torso_id].copy()

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        _, info = super().reset(seed=seed, options=options)
        self._post_step_physics()
        self._t = 0
        return self._get_obs().astype(np.float32), info

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(self._act_low.shape)
        a = np.clip(a, self._act_low, self._act_high)
        self.do_simulation(a, self.frame_skip)
        self._t += 1
        reward, terminated, info = self._reward(a)
        if self.render_mode == "human":
            self.render()
        return self._get_obs().astype(np.float32), reward, terminated, self._t >= self.horizon, info

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        state = utils.EzPickle.__getstate__(self)
        state["_ezpickle_kwargs"] = {**state["_ezpickle_kwargs"], "task": self._task}
        return state


def sample_directions(family: str, n: int, rng: np.random.Generator) -> list[Task]:
    """``n`` tasks with ``direction`` = -1 or +1, each with probability 0.5."""
    dirs = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return [Task(family, i, {"direction": float(d)}) for i, d in enumerate(dirs)]


def check_direction(task: Task) -> float:
    d = float(task.params["direction"])
    if d not in (-1.0, 1.0):
        raise ValueError(f"{task.family} direction must be -1 or +1, got {d}")
    return d
