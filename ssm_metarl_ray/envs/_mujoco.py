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
  current task (the simulator state is not kept: reset after unpickling);
* the model compiled by :func:`load_model`: gymnasium's XML, with a deprecated
  ``<compiler settotalmass>`` (HalfCheetah's) applied after compilation, so MuJoCo 4 prints no
  deprecation warning per env, and the compiled model is byte-identical to gymnasium's.

Subclasses define ``family``, ``task_params``, ``sample_tasks``, ``_apply_task(task)`` and
``_reward(action) -> (reward, terminated, info)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import mujoco
import numpy as np
from gymnasium import spaces, utils

from ssm_metarl_ray.envs.base import MetaEnv, Task


def load_model(path: str) -> mujoco.MjModel:
    """The MjModel of the MJCF file ``path``, as ``MjModel.from_xml_path(path)`` compiles it.

    A ``<compiler settotalmass="M">`` (gymnasium's half_cheetah.xml: M = 14) is deprecated in MuJoCo 4,
    whose compiler prints a two-line warning to fd 2 at every compile. Here the file is compiled
    without it, then ``mj_setTotalmass`` scales masses and inertias to ``M``, ``mj_setConst`` recomputes
    the derived constants, and :func:`_set_mass_statistics` the two statistics the compiler derives
    from the masses: the result is byte-identical to the compiler's (``tests/test_envs.py`` compares
    the saved models), so the physics is unchanged. Files without the attribute, and MuJoCo without
    ``MjSpec`` (< 3.2), are compiled as they are.
    """
    if not hasattr(mujoco, "MjSpec"):
        return mujoco.MjModel.from_xml_path(path)
    spec = mujoco.MjSpec.from_file(path)
    total = float(getattr(spec.compiler, "settotalmass", -1.0))
    if total <= 0:
        return mujoco.MjModel.from_xml_path(path)
    spec.compiler.settotalmass = -1.0
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_setTotalmass(model, total)
    mujoco.mj_setConst(model, data)
    _set_mass_statistics(model, data, keep_meanmass=not math.isnan(spec.stat.meanmass),
                         keep_meaninertia=not math.isnan(spec.stat.meaninertia))
    return model


def _set_mass_statistics(model: mujoco.MjModel, data: mujoco.MjData, keep_meanmass: bool = False,
                         keep_meaninertia: bool = False) -> None:
    """``model.stat.meanmass`` / ``meaninertia`` as MuJoCo's compiler computes them, which MuJoCo 4's
    ``mj_setConst`` leaves at the unscaled model's values: the mean body mass (world excluded) and the
    mean diagonal of the joint-space inertia at ``qpos0``. ``keep_*``: set in the XML, not derived.

    ``meaninertia`` scales the constraint solver's tolerance, so it has to match for identical physics.
    """
    if not keep_meanmass and model.nbody > 1:
        mean = 0.0
        for i in range(1, model.nbody):  # the compiler's summation order: bit-identical result
            mean += model.body_mass[i]
        model.stat.meanmass = mean / (model.nbody - 1)
    if not keep_meaninertia and model.nv > 0:
        mean = 0.0
        for m_ii in _inertia_diagonal(model, data):  # the compiler's summation order
            mean += m_ii
        model.stat.meaninertia = mean / model.nv


def _inertia_diagonal(model: mujoco.MjModel, data: mujoco.MjData) -> list[float]:
    """Diagonal of the joint-space inertia matrix at ``qpos0`` (``data`` is overwritten)."""
    data.qpos[:] = model.qpos0
    mujoco.mj_forward(model, data)
    if hasattr(model, "M_rowadr"):  # newer MuJoCo: CSR matrix data.M, diagonal last in each row
        return [float(data.M[model.M_rowadr[i] + model.M_rownnz[i] - 1]) for i in range(model.nv)]
    return [float(data.qM[model.dof_Madr[i]]) for i in range(model.nv)]


class MujocoMetaMixin(MetaEnv):
    _gym_defaults: dict[str, Any] = {}  # constructor kwargs fixed by the family (obs layout, ...)
    # Provided by the gymnasium MuJoCo env that follows in the MRO (annotations only, no class attributes).
    model: mujoco.MjModel
    data: mujoco.MjData
    fullpath: str
    width: int
    height: int
    _get_obs: Callable[[], np.ndarray]

    def __init__(self, task: Task | None = None, horizon: int | None = None, **gym_kwargs: Any):
        kwargs = {**self._gym_defaults, **gym_kwargs}
        super().__init__(**kwargs)  # the gymnasium MuJoCo env's __init__ (next in the MRO)
        utils.EzPickle.__init__(cast(utils.EzPickle, self), task=task, horizon=horizon, **gym_kwargs)
        if horizon is not None:
            self.horizon = int(horizon)
        self._t = 0
        self._torso_id = self.model.body("torso").id
        self.observation_space = spaces.Box(-np.inf, np.inf, self._get_obs().shape, np.float32)
        action_space = cast(spaces.Box, self.action_space)
        self._act_low = action_space.low.astype(np.float64)
        self._act_high = action_space.high.astype(np.float64)
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
    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:  # overrides gymnasium's
        """Model and data as gymnasium's ``MujocoEnv`` builds them, compiled by :func:`load_model`."""
        model = load_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

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
        state = utils.EzPickle.__getstate__(cast(utils.EzPickle, self))
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
