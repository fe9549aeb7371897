"""MAML 2017's published held-out returns, as reference curves for the adaptation plot.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks":
figure 4 (2-D navigation) and figure 5 (locomotion), mean return over 40 test tasks after 0, 1, 2, 3
policy-gradient steps, per method (``maml``, ``pretrain``: multi-task pretraining, ``random``: random
initialisation), and the ``oracle`` (the task given in the observation; one number, no adaptation).

The repository keeps the full tables (mean, std, s.e.m.) in ``benchmarks/anchors/maml2017_fig{4,5}.csv``;
this module copies the means the plot needs, so an installed package reads no file outside itself.
``tests/test_plots.py`` checks that the two agree. ``ant-dir`` has no published curve in those figures.
"""

from __future__ import annotations

from typing import Any

LABEL = "MAML 2017 (published)"
METHODS = ("maml", "pretrain", "random")

# family -> task (the CSV's ``task`` column), source file, per-method means after 0..3 steps, oracle
MAML2017: dict[str, dict[str, Any]] = {
    "navigation-2d": {
        "task": "2D navigation (point robot)",
        "source": "maml2017_fig4.csv",
        "maml": [-40.41, -11.68, -3.33, -3.23],
        "pretrain": [-40.81, -19.73, -11.72, -8.47],
        "random": [-82.66, -57.96, -53.84, -46.81],
        "oracle": -2.29,
    },
    "halfcheetah-vel": {
        "task": "HalfCheetahVel (goal vel U[0,2])",
        "source": "maml2017_fig5.csv",
        "maml": [-129.5, -78.6, -66.6, -60.8],
        "pretrain": [-158.0, -135.4, -128.5, -133.6],
        "random": [-254.8, -254.3, -246.8, -230.8],
        "oracle": -54.5,
    },
    "halfcheetah-dir": {
        "task": "HalfCheetahDir (fwd/back)",
        "source": "maml2017_fig5.csv",
        "maml": [-50.7, 293.2, 313.5, 315.7],
        "pretrain": [-43.0, -24.7, -12.8, 19.6],
        "random": [-35.7, 21.8, 62.3, 86.2],
        "oracle": 442.7,
    },
}


def maml2017(family: str | None) -> dict[str, Any] | None:
    """The published MAML 2017 record of task family ``family`` (see :data:`MAML2017`; a family sharing
    another's tasks, ``envs.registry.Family.tasks_of``, has that one's), or None."""
    from ssm_metarl_ray.envs.registry import task_family  # registry only: no MuJoCo import

    return MAML2017.get(task_family(family)) if family else None
