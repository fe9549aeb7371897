"""``navigation-2d``: the MAML 2017 point robot (profile ``maml2017``, cbfinn/maml_rl ``point_env_randgoal``).

* observation: position ``(x, y)`` (2-d, float32), every episode starts at the origin;
* action: displacement, ``Box(-0.1, 0.1, (2,))``; the env itself clips actions to ``[-0.1, 0.1]``
  (rllab's ``normalize`` did the same), so unbounded policy outputs are safe;
* task: goal ``(goal_x, goal_y) ~ U[-0.5, 0.5]^2``;
* reward: ``-||pos - goal||_2`` measured after the move;
* termination: ``|x - goal_x| < 0.01 and |y - goal_y| < 0.01``; truncation at ``horizon`` (100) steps.

The step is pure Python float arithmetic plus one small float32 array: this is the default CI task
and is stepped millions of times, so there are no wrappers and no numpy calls on the hot path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from ssm_metarl_ray.envs.base import MetaEnv, Task

MAX_STEP = 0.1
GOAL_LOW, GOAL_HIGH = -0.5, 0.5
SUCCESS_TOL = 0.01


class Navigation2DEnv(MetaEnv):
    """Point robot moving to a goal in the plane (see module docstring).

    Args:
        task: initial task (default :meth:`default_task`, a goal drawn with ``default_rng(0)``).
        horizon: episode length in steps (truncation), default 100.
    """

    family = "navigation-2d"
    horizon = 100
    finite_task_set = False
    task_params = ("goal_x", "goal_y")
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: Task | None = None, horizon: int | None = None):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, (2,), np.float32)
        if horizon is not None:
            self.horizon = int(horizon)
        self._x = self._y = 0.0
        self._t = 0
        self.set_task(self.default_task() if task is None else task)

    # ---------------------------------------------------------------- tasks
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(n, 2))
        return [
            Task(self.family, i, {"goal_x": float(g[0]), "goal_y": float(g[1])}) for i, g in enumerate(goals)
        ]

    def set_task(self, task: Task) -> None:
        self._task = self._validate_task(task)
        self._gx = float(task.params["goal_x"])
        self._gy = float(task.params["goal_y"])

    def get_task(self) -> Task:
        return self._task

    @property
    def goal(self) -> np.ndarray:
        return np.array((self._gx, self._gy))

    @property
    def position(self) -> np.ndarray:
        """Exact (float64) position; the observation is its float32 copy."""
        return np.array((self._x, self._y))

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            super().reset(seed=seed)  # seeds self.np_random (the start state itself is deterministic)
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        self._x = self._y = 0.0
        self._t = 0
        return np.zeros(2, np.float32), {"distance": math.hypot(self._gx, self._gy)}

    def step(self, action):
        if type(action) is np.ndarray:
            ax, ay = action.tolist()  # one call instead of two indexings + float()
        else:
            ax, ay = float(action[0]), float(action[1])
        ax = -MAX_STEP if ax < -MAX_STEP else (MAX_STEP if ax > MAX_STEP else ax)
        ay = -MAX_STEP if ay < -MAX_STEP else (MAX_STEP if ay > MAX_STEP else ay)
        x = self._x = self._x + ax
        y = self._y = self._y + ay
        dx = x - self._gx
        dy = y - self._gy
        dist = math.sqrt(dx * dx + dy * dy)
        self._t += 1
        terminated = -SUCCESS_TOL < dx < SUCCESS_TOL and -SUCCESS_TOL < dy < SUCCESS_TOL
        return (
            np.array((x, y), np.float32),
            -dist,
            terminated,
            self._t >= self.horizon,
            {"distance": dist},
        )
