"""Held-out evaluation: return before adaptation and after each adaptation step, per mode.

``Evaluator`` is a plain class (the Ray runtime runs several as actors); ``summarize`` turns per-task
returns into the mean and standard error over tasks that the CLI prints and plots.
"""

from __future__ import annotations

import numpy as np
import torch

from ssm_metarl_ray.adapters import make_adapter
from ssm_metarl_ray.adapters.standard import AdaptResult
from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.rollout.worker import RolloutWorker
from ssm_metarl_ray.utils.progress import Progress
from ssm_metarl_ray.utils.stats import mean_sem


class Evaluator:
    def __init__(self, cfg: ExperimentConfig, seed: int = 0):
        self.cfg = cfg
        self.worker = RolloutWorker(cfg.env, cfg.model, cfg.test_meta, cfg.adapt.episodes_per_step, seed)
        self.seed = seed

    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        self.worker.set_weights(weights, version)

    def evaluate(self, tasks: list[Task], mode: str, buffer: ExperienceBuffer | None = None,
                 replay_source=None, on_task=None) -> list[list[float]]:
        """Adapt to each task from the meta-parameters; returns per-task lists of step returns.
        ``on_task()`` is called after each task (progress)."""
        policy = self.worker.policy
        if mode == "hybrid":  # adapt against a private copy (repeatable runs) or a fresh local buffer
            buffer = copy_buffer(buffer) if buffer is not None else self.empty_buffer()
        adapter = make_adapter(mode, policy, self.cfg.adapt, buffer, self.worker.spec.horizon, self.seed,
                               episodes_per_trial=self.cfg.meta.episodes_per_trial,
                               episodes_per_row=self.cfg.meta.episodes_per_row)
        if replay_source is not None:
            adapter.replay_source = replay_source
        out = []
        for task in tasks:
            out.append(self.adapt_task(adapter, task).returns)
            if on_task is not None:
                on_task()
        return out

    def adapt_task(self, adapter, task: Task) -> AdaptResult:
        """``adapter.adapt`` on ``task`` from the meta-parameters, seeded by (evaluator seed, task): the same
        task gives the same pre-adaptation episodes in every mode and to every caller (plots, recordings)."""
        self.worker.rng = np.random.default_rng([self.seed, task.index])
        torch.manual_seed(self.seed * 100_003 + task.index)
        return adapter.adapt(self.worker, task)

    def empty_buffer(self) -> ExperienceBuffer:
        spec = self.worker.spec
        return ExperienceBuffer(self.cfg.adapt.buffer_size, spec.obs_dim, 1 if spec.discrete else spec.act_dim,
                                spec.discrete)


def copy_buffer(buffer: ExperienceBuffer) -> ExperienceBuffer:
    new = ExperienceBuffer(buffer.capacity, buffer.obs_dim, buffer.act_dim, buffer.discrete)
    new.load_state_dict(buffer.state_dict())
    return new


def summarize(per_task: list[list[float]]) -> dict:
    arr = np.asarray(per_task, dtype=np.float64)  # (tasks, steps + 1)
    mean, sem = mean_sem(arr, axis=0)
    return {"mean": mean.tolist(), "sem": sem.tolist(), "per_task": arr.tolist()}


def format_table(results: dict[str, dict]) -> str:
    """Mean ± s.e.m. per column: gradient steps 0..S for standard/hybrid; for in-context, column k is
    episode k+1 of a trial."""
    steps = max(len(r["mean"]) for r in results.values())
    head = "mode      " + "".join(f"{'step ' + str(s):>18}" for s in range(steps))
    lines = [head, "-" * len(head)]
    for mode, r in results.items():
        cells = "".join(f"{m:>10.2f} ±{s:6.2f}" for m, s in zip(r["mean"], r["sem"]))
        lines.append(f"{mode:<10}{cells}")
    if "in-context" in results:
        lines.append("(in-context: step k = episode k+1 of a trial, no gradient step)")
    return "\n".join(lines)


def plot_results(results: dict[str, dict], path, title: str, env: str | None = None) -> None:
    """Held-out return vs adaptation steps, one curve per mode (mean ± s.e.m. over tasks).

    When task family ``env`` has published MAML 2017 numbers (:mod:`ssm_metarl_ray.anchors`), MAML's curve
    is drawn as a reference (dashed, "MAML 2017 (published)"), its oracle as a horizontal line, and its
    pretrain / random-initialisation curves lighter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = max(len(r["mean"]) for r in results.values())
    for mode, r in results.items():
        x = np.arange(len(r["mean"]))
        ax.errorbar(x, r["mean"], yerr=r["sem"], marker="o", capsize=3, label=mode)
    steps = max(steps, _plot_references(ax, env))
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("mean return (held-out tasks)")
    ax.set_xticks(range(steps))
    ax.set_title(title, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] not in results)  # our modes first
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_references(ax, env: str | None) -> int:
    """Draw MAML 2017's published curves for ``env`` on ``ax``; returns how many steps they span (0: none)."""
    from ssm_metarl_ray.anchors import LABEL, maml2017

    ref = maml2017(env)
    if ref is None:
        return 0
    x = np.arange(len(ref["maml"]))
    ax.plot(x, ref["maml"], "k--", marker="s", markersize=4, label=LABEL)
    for method, name, gray in (("pretrain", "pretrain", "0.45"), ("random", "random init", "0.7")):
        ax.plot(x, ref[method], ":", color=gray, lw=1.2, label=f"{LABEL}: {name}")
    ax.axhline(ref["oracle"], color="0.3", lw=1, label=f"{LABEL}: oracle")
    return len(x)


def evaluate_modes(cfg: ExperimentConfig, weights: dict, test_tasks, buffer: ExperienceBuffer | None,
                   modes: list[str], version: int = 0, progress: bool = False) -> dict[str, dict]:
    """``{mode: summarize(per-task returns)}`` in this process; ``progress``: a bar / ETA lines on stderr."""
    evaluator = Evaluator(cfg, seed=cfg.seed + 1)
    evaluator.set_weights({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in weights.items()},
                          version)
    with Progress(len(modes) * len(test_tasks), "held-out evaluation (tasks x modes)", enabled=progress) as bar:
        return {mode: summarize(evaluator.evaluate(test_tasks, mode, buffer, on_task=bar.update))
                for mode in modes}
