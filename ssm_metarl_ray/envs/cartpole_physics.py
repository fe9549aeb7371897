"""``cartpole-physics``: CartPole whose physical constants are the task.

Dynamics are the classic cart-pole equations (Barto, Sutton & Anderson 1983, as corrected by Florian
2007) integrated with explicit Euler at ``tau = 0.02`` s and ``force_mag = 10`` N, matching
gymnasium's ``CartPole-v1`` at the nominal constants. Discrete actions: 0 pushes left, 1 pushes right.
Observation (4-d, float32): ``(x, x_dot, theta, theta_dot)``; the start state is ``U(-0.05, 0.05)^4``.
Reward +1 every step (including the one that ends the episode); termination when ``|x| > 2.4`` or
``|theta| > 12 deg`` as CartPole-v1; truncation at ``horizon`` (200) steps.

Task parameters and sampling ranges (each independent, uniform):

==================  ===============  ==========  ===================================
param               range            nominal     meaning
==================  ===============  ==========  ===================================
``pole_length``     U[0.25, 1.0]     0.5         pole half-length (m), gym's ``length``
``pole_mass``       U[0.05, 0.5]     0.1         kg
``cart_mass``       U[0.5, 2.0]      1.0         kg
``gravity``         U[4.9, 14.7]     9.8         m/s^2
==================  ===============  ==========  ===================================

Every derived constant (``total_mass``, ``polemass_length``) is recomputed in :meth:`set_task`,
unlike RLlib's ``CartPoleMassEnv`` where cached constants made the cart mass a no-op. The default
task is the nominal (CartPole-v1) one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from ssm_metarl_ray.envs.base import MetaEnv, Task

PARAM_RANGES: dict[str, tuple[float, float]] = {
    "pole_length": (0.25, 1.0),
    "pole_mass": (0.05, 0.5),
    "cart_mass": (0.5, 2.0),
    "gravity": (4.9, 14.7),
}
NOMINAL: dict[str, float] = {"pole_length": 0.5, "pole_mass": 0.1, "cart_mass": 1.0, "gravity": 9.8}
FORCE_MAG = 10.0
TAU = 0.02
X_THRESHOLD = 2.4
THETA_THRESHOLD = 12 * 2 * math.pi / 360


class CartPolePhysicsEnv(MetaEnv):
    """CartPole with task-dependent pole length, pole mass, cart mass and gravity.

    Args:
        task: initial task (default: the nominal CartPole-v1 constants, index -1).
        horizon: episode length in steps (truncation), default 200.
    """

    family = "cartpole-physics"
    horizon = 200
    finite_task_set = False
    task_params = tuple(PARAM_RANGES)
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, task: Task | None = None, horizon: int | None = None):
        high = np.array(
            [X_THRESHOLD * 2, np.finfo(np.float32).max, THETA_THRESHOLD * 2, np.finfo(np.float32).max],
            dtype=np.float32,
        )
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        if horizon is not None:
            self.horizon = int(horizon)
        self._state: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)  # (x, x_dot, theta, theta_dot)
        self._t = 0
        self.set_task(self.default_task() if task is None else task)

    # ---------------------------------------------------------------- tasks
    def default_task(self) -> Task:
        return Task(self.family, -1, dict(NOMINAL))

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        lows = np.array([lo for lo, _ in PARAM_RANGES.values()])
        highs = np.array([hi for _, hi in PARAM_RANGES.values()])
        draws = rng.uniform(lows, highs, size=(n, len(PARAM_RANGES)))
        return [
            Task(self.family, i, {k: float(v) for k, v in zip(PARAM_RANGES, row)})
            for i, row in enumerate(draws)
        ]

    def set_task(self, task: Task) -> None:
        self._task = self._validate_task(task)
        p = task.params
        self.length = float(p["pole_length"])
        self.masspole = float(p["pole_mass"])
        self.masscart = float(p["cart_mass"])
        self.gravity = float(p["gravity"])
        # derived constants: recomputed here, never cached elsewhere
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length

    def get_task(self) -> Task:
        return self._task

    @property
    def state(self) -> np.ndarray:
        """Exact (float64) state ``(x, x_dot, theta, theta_dot)``."""
        return np.array(self._state)

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        self._state = tuple(float(v) for v in self.np_random.uniform(-0.05, 0.05, size=4))
        self._t = 0
        return np.array(self._state, np.float32), {}

    def step(self, action):
        a = int(action)
        if a not in (0, 1):
            raise ValueError(f"cartpole-physics action must be 0 or 1, got {action!r}")
        x, x_dot, theta, theta_dot = self._state
        force = FORCE_MAG if a == 1 else -FORCE_MAG
        cos_t = math.cos(theta)
        sin_t = math.sin(theta)
        temp = (force + self.polemass_length * theta_dot * theta_dot * sin_t) / self.total_mass
        theta_acc = (self.gravity * sin_t - cos_t * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos_t * cos_t / self.total_mass)
        )
        x_acc = temp - self.polemass_length * theta_acc * cos_t / self.total_mass
        x = x + TAU * x_dot
        x_dot = x_dot + TAU * x_acc
        theta = theta + TAU * theta_dot
        theta_dot = theta_dot + TAU * theta_acc
        self._state = (x, x_dot, theta, theta_dot)
        self._t += 1
        terminated = not (-X_THRESHOLD <= x <= X_THRESHOLD and -THETA_THRESHOLD <= theta <= THETA_THRESHOLD)
        return (
            np.array(self._state, np.float32),
            1.0,
            terminated,
            self._t >= self.horizon,
            {"x_acc": x_acc, "theta_acc": theta_acc},
        )
