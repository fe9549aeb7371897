"""``halfcheetah-vel`` and ``halfcheetah-dir``, task profile ``maml2017`` on gymnasium ``HalfCheetah-v5``.

Profile ``maml2017`` (cbfinn/maml_rl ``half_cheetah_env_rand.py`` / ``half_cheetah_env_rand_direc.py``):

* forward velocity ``v_x`` = x-velocity of the **centre of mass** of the torso subtree (the whole
  cheetah), ``data.subtree_linvel[torso, 0]`` after a post-step ``mj_forward`` -- the modern form of
  rllab's ``get_body_comvel("torso")``. It is *not* ``qvel[0]`` (the root slide joint) nor gymnasium's
  finite difference of ``qpos[0]``; both are reported in ``info`` for comparison;
* control cost ``0.05 * sum(a^2)`` (rllab's ``0.5 * 1e-1``) on the action clipped to ``[-1, 1]^6``;
* ``halfcheetah-vel``: ``v_goal ~ U[0, 2]``, ``r = -|v_x - v_goal| - 0.05 sum(a^2)``;
* ``halfcheetah-dir``: ``direction`` = +1 / -1 with p = 0.5, ``r = direction * v_x - 0.05 sum(a^2)``
  (``finite_task_set = True``; maml2017 drew U(0, 2) and thresholded at 1, the same distribution);
* horizon 200, never terminates.

Observation: gymnasium ``HalfCheetah-v5`` default, **17-d** (``qpos[1:]`` then ``qvel``), float32.
Dynamics, ``frame_skip = 5`` (dt = 0.05 s) and the reset noise (0.1) are HalfCheetah-v5's. These three
differ from MAML 2017's own simulator settings, which the ``-rllab`` families reproduce:

* ``halfcheetah-vel-rllab`` / ``halfcheetah-dir-rllab``: the same tasks and rewards on rllab's
  ``HalfCheetahEnv`` as maml2017 ran it: **dt = 0.01 s** (rllab's ``half_cheetah.xml`` has timestep 0.01
  and no ``frame_skip`` numeric, so rllab's ``MujocoEnv`` steps once per action: 200 steps are 2 s of
  simulated time, against 10 s above), the **20-d observation** ``qpos[1:], qvel, COM of the torso
  subtree`` (``get_body_com("torso")``), and rllab's reset noise (``qpos + 0.01 N(0, 1)``,
  ``qvel + 0.1 N(0, 1)``). The model (gymnasium's XML is rllab's) and the rest are as above; the
  simulator is today's MuJoCo, not rllab's 1.31, whose contact solver differed.

``info``: ``reward_run`` (velocity term), ``reward_ctrl`` (minus control cost), ``x_velocity`` (COM),
``x_velocity_qvel`` (``qvel[0]``), ``x_position``, and the task parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from ssm_metarl_ray.envs._mujoco import MujocoMetaMixin, check_direction, sample_directions
from ssm_metarl_ray.envs.base import Task

CTRL_COST = 0.05
GOAL_VELOCITY_RANGE = (0.0, 2.0)


class _HalfCheetahMeta(MujocoMetaMixin, HalfCheetahEnv):
    horizon = 200
    _gym_defaults = {"exclude_current_positions_from_observation": True}

    def _terms(self, action: np.ndarray) -> tuple[float, float, dict[str, Any]]:
        v = float(self.data.subtree_linvel[self._torso_id, 0])
        ctrl = CTRL_COST * float(np.sum(np.square(action)))
        info = {
            "x_velocity": v,
            "x_velocity_qvel": float(self.data.qvel[0]),
            "x_position": float(self.data.qpos[0]),
            "reward_ctrl": -ctrl,
        }
        return v, ctrl, info


class HalfCheetahVelEnv(_HalfCheetahMeta):
    """HalfCheetah running at a goal velocity (maml2017 profile; see module docstring).

    Args:
        task: initial task (default: ``goal_velocity`` drawn with ``default_rng(0)``, index -1).
        horizon: episode length in steps, default 200.
        **gym_kwargs: passed to gymnasium's ``HalfCheetahEnv`` (e.g. ``render_mode``, ``reset_noise_scale``).
    """

    family = "halfcheetah-vel"
    finite_task_set = False
    task_params = ("goal_velocity",)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        v = rng.uniform(*GOAL_VELOCITY_RANGE, size=n)
        return [Task(self.family, i, {"goal_velocity": float(x)}) for i, x in enumerate(v)]

    def _apply_task(self, task: Task) -> None:
        self._goal_velocity = float(task.params["goal_velocity"])

    def _reward(self, action):
        v, ctrl, info = self._terms(action)
        run = -abs(v - self._goal_velocity)
        info["reward_run"] = run
        info["goal_velocity"] = self._goal_velocity
        return run - ctrl, False, info


class HalfCheetahDirEnv(_HalfCheetahMeta):
    """HalfCheetah running forward (+1) or backward (-1) (maml2017 profile; see module docstring).

    Args:
        task: initial task (default: ``direction = +1``, index -1).
        horizon: episode length in steps, default 200.
        **gym_kwargs: passed to gymnasium's ``HalfCheetahEnv``.
    """

    family = "halfcheetah-dir"
    finite_task_set = True
    task_params = ("direction",)

    def default_task(self) -> Task:
        return Task(self.family, -1, {"direction": 1.0})

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return sample_directions(self.family, n, rng)

    def _apply_task(self, task: Task) -> None:
        self._direction = check_direction(task)

    def _reward(self, action):
        v, ctrl, info = self._terms(action)
        run = self._direction * v
        info["reward_run"] = run
        info["direction"] = self._direction
        return run - ctrl, False, info


class _RllabCheetah:
    """MAML 2017's rllab simulator settings (module docstring); goes before a family class in the bases."""

    _gym_defaults = {"exclude_current_positions_from_observation": True, "frame_skip": 1}
    data: Any
    init_qpos: np.ndarray
    init_qvel: np.ndarray
    np_random: np.random.Generator
    _torso_id: int
    set_state: Any

    def _get_obs(self) -> np.ndarray:
        """(20,): qpos[1:] (8), qvel (9), the torso subtree's centre of mass (3)."""
        d = self.data
        return np.concatenate([d.qpos.flat[1:], d.qvel.flat, d.subtree_com[self._torso_id]])

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos + 0.01 * self.np_random.standard_normal(self.init_qpos.shape)
        qvel = self.init_qvel + 0.1 * self.np_random.standard_normal(self.init_qvel.shape)
        self.set_state(qpos, qvel)
        return self._get_obs()


class HalfCheetahVelRllabEnv(_RllabCheetah, HalfCheetahVelEnv):
    """``halfcheetah-vel`` with MAML 2017's rllab simulator settings (dt 0.01 s, 20-d observation)."""

    family = "halfcheetah-vel-rllab"


class HalfCheetahDirRllabEnv(_RllabCheetah, HalfCheetahDirEnv):
    """``halfcheetah-dir`` with MAML 2017's rllab simulator settings (dt 0.01 s, 20-d observation)."""

    family = "halfcheetah-dir-rllab"
