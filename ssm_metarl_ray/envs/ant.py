"""``ant-dir`` (profile ``maml2017``) and ``ant-goal`` (profile ``promp2019``/``pearl2019``) on ``Ant-v5``.

Both use Ant-v5's model, ``frame_skip = 5`` (dt = 0.05 s), reset noise (0.1) and action space
``[-1, 1]^8`` (actions are clipped to it before simulation and before the control cost). Contact
forces ``cfrc_ext`` are real: they are recomputed after every step by ``mj_rnePostConstraint`` on the
post-step state (see :mod:`ssm_metarl_ray.envs._mujoco`), so they are non-zero once the ant touches
the ground (MuJoCo >= 2.0 silently left them at zero in older code). ``cfrc = clip(cfrc_ext, -1, 1)``.

``ant-dir`` -- maml2017 (cbfinn/maml_rl ``ant_env_rand_direc.py``):
    ``direction`` = +1 / -1 with p = 0.5 (``finite_task_set = True``);
    ``r = direction * v_x - 0.005 * sum((a / scale)^2) - 0.0005 * sum(cfrc^2) + 0.05``, with ``v_x`` the
    x-velocity of the centre of mass of the torso subtree (rllab ``get_body_comvel("torso")``, here
    ``data.subtree_linvel[torso, 0]``) and ``scale = (high - low) / 2`` = 1 for Ant-v5;
    terminates when the torso height ``qpos[2]`` leaves ``[0.2, 1.0]`` or the state is not finite;
    horizon 200. Observation: Ant-v5 default, **105-d** = ``qpos[2:]`` (13) + ``qvel`` (14) +
    ``cfrc[1:]`` (13 bodies x 6 = 78), float32 (rllab's was different: qpos, qvel, cfrc, torso xmat, COM).

``ant-goal`` -- ProMP ``ant_rand_goal.py`` / PEARL ``ant_goal.py``:
    goal uniform in the disc of radius 3 (angle ``U(0, 2 pi)``, radius ``3 sqrt(U(0, 1))``);
    ``r = -||xy_torso - goal||_1 - 0.1 * sum(a^2) - 0.0005 * sum(cfrc^2)``, ``xy_torso`` = torso body
    position ``data.xpos[torso, :2]`` (= ``qpos[:2]``); no survive bonus, never terminates; horizon 200.
    Observation: **107-d** = full ``qpos`` (15, x-y included as in ProMP/PEARL, since the goal is a
    position) + ``qvel`` (14) + ``cfrc[1:]`` (78), float32.

``info``: ``reward_forward`` / ``reward_goal``, ``reward_ctrl``, ``reward_contact``, ``reward_survive``
(ant-dir), ``x_velocity`` (COM), ``x_position``, ``y_position``, and the task parameters.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from ssm_metarl_ray.envs._mujoco import MujocoMetaMixin, check_direction, sample_directions
from ssm_metarl_ray.envs.base import Task

CONTACT_COST = 0.0005
GOAL_RADIUS = 3.0


class _AntMeta(MujocoMetaMixin, AntEnv):
    horizon = 200

    def _contact_cost(self) -> float:
        return CONTACT_COST * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1.0, 1.0))))

    def _base_info(self) -> dict:
        return {
            "x_velocity": float(self.data.subtree_linvel[self._torso_id, 0]),
            "x_position": float(self.data.qpos[0]),
            "y_position": float(self.data.qpos[1]),
        }


class AntDirEnv(_AntMeta):
    """Ant running forward (+1) or backward (-1) along x, maml2017 profile (see module docstring).

    Args:
        task: initial task (default: ``direction = +1``, index -1).
        horizon: episode length in steps, default 200.
        **gym_kwargs: passed to gymnasium's ``AntEnv`` (e.g. ``render_mode``, ``reset_noise_scale``).
    """

    family = "ant-dir"
    finite_task_set = True
    task_params = ("direction",)
    _gym_defaults = {
        "exclude_current_positions_from_observation": True,
        "include_cfrc_ext_in_observation": True,
        "healthy_z_range": (0.2, 1.0),
    }
    CTRL_COST = 0.005
    SURVIVE = 0.05
    Z_RANGE = (0.2, 1.0)

    def default_task(self) -> Task:
        return Task(self.family, -1, {"direction": 1.0})

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        return sample_directions(self.family, n, rng)

    def _apply_task(self, task: Task) -> None:
        self._direction = check_direction(task)

    def _reward(self, action):
        info = self._base_info()
        scale = (self._act_high - self._act_low) / 2.0
        forward = self._direction * info["x_velocity"]
        ctrl = self.CTRL_COST * float(np.sum(np.square(action / scale)))
        contact = self._contact_cost()
        z = float(self.data.qpos[2])
        finite = bool(np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all())
        terminated = not (finite and self.Z_RANGE[0] <= z <= self.Z_RANGE[1])
        info.update(
            reward_forward=forward,
            reward_ctrl=-ctrl,
            reward_contact=-contact,
            reward_survive=self.SURVIVE,
            direction=self._direction,
        )
        return forward - ctrl - contact + self.SURVIVE, terminated, info


class AntGoalEnv(_AntMeta):
    """Ant walking to a 2-d goal position, ProMP/PEARL profile (see module docstring).

    Args:
        task: initial task (default: goal drawn with ``default_rng(0)``, index -1).
        horizon: episode length in steps, default 200.
        **gym_kwargs: passed to gymnasium's ``AntEnv``.
    """

    family = "ant-goal"
    finite_task_set = False
    task_params = ("goal_x", "goal_y")
    _gym_defaults = {
        "exclude_current_positions_from_observation": False,
        "include_cfrc_ext_in_observation": True,
        "terminate_when_unhealthy": False,
    }
    CTRL_COST = 0.1

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        angle = rng.uniform(0.0, 2.0 * math.pi, size=n)
        radius = GOAL_RADIUS * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        gx, gy = radius * np.cos(angle), radius * np.sin(angle)
        return [
            Task(self.family, i, {"goal_x": float(x), "goal_y": float(y)})
            for i, (x, y) in enumerate(zip(gx, gy))
        ]

    def _apply_task(self, task: Task) -> None:
        self._goal = np.array([task.params["goal_x"], task.params["goal_y"]], dtype=np.float64)

    def _reward(self, action):
        info = self._base_info()
        xy = self.data.xpos[self._torso_id, :2]
        goal_term = -float(np.sum(np.abs(xy - self._goal)))
        ctrl = self.CTRL_COST * float(np.sum(np.square(action)))
        contact = self._contact_cost()
        info.update(
            reward_goal=goal_term,
            reward_ctrl=-ctrl,
            reward_contact=-contact,
            goal_x=float(self._goal[0]),
            goal_y=float(self._goal[1]),
        )
        return goal_term - ctrl - contact, False, info
