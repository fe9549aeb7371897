"""Task records and the task-settable environment API shared by every task family.

Every family is a ``gymnasium.Env`` subclass of :class:`MetaEnv` with

* ``sample_tasks(n, rng) -> list[Task]``: ``n`` tasks drawn with the given ``numpy.random.Generator``
  (never the global RNG, so workers in different processes do not duplicate tasks);
* ``set_task(task)``: switch dynamics/reward to ``task`` (takes effect at the next ``reset``/``step``);
* ``get_task() -> Task``.

Tasks are small frozen, picklable records: ``Task(family, index, params)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class Task:
    """One task of a family. ``params`` maps parameter names to floats (e.g. ``{"goal_velocity": 1.3}``)."""

    family: str
    index: int
    params: dict[str, float] = field(default_factory=dict)

    def __hash__(self) -> int:  # dict field: hash on the sorted items
        return hash((self.family, self.index, tuple(sorted(self.params.items()))))


def task_vector(task: Task) -> tuple[float, ...]:
    """The task's parameters as floats, sorted by name (``{"goal_x": .1, "goal_y": -.2}`` -> (.1, -.2))."""
    return tuple(float(task.params[k]) for k in sorted(task.params))


class MetaEnv(gym.Env):
    """Base class of task families (see module docstring)."""

    family: str = ""
    horizon: int = 0
    finite_task_set: bool = False  # True when the family has finitely many tasks (e.g. directions)
    task_params: tuple[str, ...] = ()  # names of the keys every task's ``params`` must carry

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[Task]:
        raise NotImplementedError

    def set_task(self, task: Task) -> None:
        raise NotImplementedError

    def get_task(self) -> Task:
        raise NotImplementedError

    def default_task(self) -> Task:
        """Task used before any ``set_task``: index -1, by default the first draw of ``default_rng(0)``."""
        t = self.sample_tasks(1, np.random.default_rng(0))[0]
        return Task(t.family, -1, dict(t.params))

    def _validate_task(self, task: Task) -> Task:
        """Check that ``task`` belongs to this family and carries exactly :attr:`task_params`."""
        if not isinstance(task, Task):
            raise TypeError(f"{type(self).__name__}.set_task expects a Task, got {type(task).__name__}")
        if task.family != self.family:
            raise ValueError(f"task of family {task.family!r} given to a {self.family!r} env")
        if set(task.params) != set(self.task_params):
            raise ValueError(
                f"{self.family} task params must be {sorted(self.task_params)}, got {sorted(task.params)}"
            )
        return task


def task_splits(env: MetaEnv, n_train: int, n_test: int, seed: int) -> tuple[list[Task], list[Task]]:
    """Seeded train/test task lists drawn from independent streams of one seed.

    Test tasks are drawn from a child stream distinct from the training stream, re-indexed after the
    training tasks, and (for continuous families) resampled until no test task equals a training
    task. Families with a finite task set (e.g. halfcheetah-dir's two directions) necessarily share
    task parameters between the splits, as in MAML 2017 and PEARL.
    """
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train = env.sample_tasks(n_train, train_rng)
    train_params = {tuple(sorted(t.params.items())) for t in train}
    test: list[Task] = []
    for _ in range(100):
        if len(test) >= n_test:
            break
        for t in env.sample_tasks(n_test - len(test), test_rng):
            if tuple(sorted(t.params.items())) not in train_params or env.finite_task_set:
                test.append(t)
    test = test[:n_test]
    train = [Task(t.family, i, dict(t.params)) for i, t in enumerate(train)]
    test = [Task(t.family, n_train + i, dict(t.params)) for i, t in enumerate(test)]
    return train, test


def describe(task: Task) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in sorted(task.params.items()))


__all__: list[Any] = ["Task", "MetaEnv", "task_splits", "describe"]
