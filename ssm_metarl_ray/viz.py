"""Pictures of a trained policy: navigation-2d paths through adaptation, and rollout recordings.

* :func:`plot_navigation_paths`: for a few held-out goals, the 2-D paths of the policy before adaptation
  and after each standard adaptation step (one panel per goal, goal marked), from a checkpoint's weights;
* :func:`record_rollout`: a checkpoint's policy, optionally adapted to one held-out task, rendered for one
  episode with MuJoCo's offscreen renderer and written as a GIF (or MP4 where an encoder is installed).
  A navigation-2d checkpoint gets the paths plot of that task instead (``out_path`` ending in ``.png``).

Both reuse the evaluation code: an :class:`~ssm_metarl_ray.training.evaluate.Evaluator` seeded like the
CLI's held-out evaluation (seed ``cfg.seed + 1``) adapts with the :class:`StandardAdapter`, so the returns
shown are the per-task returns ``ssm-metarl evaluate`` reports for the same adaptation settings. Held-out
task ``K`` is the ``K``-th test task (0-based), the ``K``-th entry of ``metrics.json``'s ``per_task``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from ssm_metarl_ray.adapters.standard import AdaptResult, StandardAdapter
from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import Task, make_env, task_splits
from ssm_metarl_ray.envs.base import MetaEnv, describe
from ssm_metarl_ray.training.evaluate import Evaluator
from ssm_metarl_ray.types import EpisodeBatch

VIDEO_SUFFIXES = (".gif", ".mp4")
GL_BACKENDS = ("egl", "osmesa", "glfw")  # gymnasium's offscreen renderers, in the order tried


class RecordingError(ValueError):
    """A recording that cannot be made: bad output path or task, family without rendering, no GL backend."""


# ------------------------------------------------------------------------------------------ adaptation
class _KeepBatches(StandardAdapter):
    """Standard adaptation keeping the episodes sampled before each step (``batches[s]``: after s steps)."""

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self.batches: list[EpisodeBatch] = []

    def observe(self, batch: EpisodeBatch) -> None:
        self.batches.append(batch)


def held_out_tasks(cfg: ExperimentConfig) -> list[Task]:
    """The run's held-out test tasks, in the order evaluation reports them."""
    return task_splits(make_env(cfg.env), cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)[1]


def _numpy_weights(weights: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in weights.items()}


def standard_evaluator(cfg: ExperimentConfig, weights: dict, adapt_steps: int | None = None,
                       episodes_per_step: int | None = None) -> tuple[Evaluator, _KeepBatches]:
    """An evaluator holding ``weights`` (seeded like the CLI's evaluation) and a standard adapter that keeps
    its batches; ``adapt_steps`` / ``episodes_per_step`` default to the run's ``cfg.adapt`` values."""
    adapt = replace(cfg.adapt, adaptation_mode="standard",
                    adapt_steps=cfg.adapt.adapt_steps if adapt_steps is None else adapt_steps,
                    episodes_per_step=episodes_per_step or cfg.adapt.episodes_per_step)
    cfg = replace(cfg, adapt=adapt)
    evaluator = Evaluator(cfg, seed=cfg.seed + 1)
    evaluator.set_weights(_numpy_weights(weights), 0)
    return evaluator, _KeepBatches(evaluator.worker.policy, adapt)


# ------------------------------------------------------------------------------------- navigation paths
def episode_paths(batch: EpisodeBatch, n: int) -> list[np.ndarray]:
    """Positions ``(T_k, 2)`` of the first ``n`` episodes of a navigation-2d batch (its observations)."""
    return [batch.obs[k][batch.mask[k] > 0] for k in range(min(n, batch.obs.shape[0]))]


def navigation_paths(cfg: ExperimentConfig, weights: dict, task_indices: list[int],
                     adapt_steps: int | None = None, episodes_per_step: int | None = None,
                     paths_per_step: int = 1) -> list[dict]:
    """Per held-out task index K: ``{"held_out": K, "task", "goal", "returns" (mean return after 0..S
    steps), "paths" (per step, a list of ``paths_per_step`` position arrays)}`` from standard adaptation of
    ``weights`` to that task."""
    tasks = held_out_tasks(cfg)
    evaluator, adapter = standard_evaluator(cfg, weights, adapt_steps, episodes_per_step)
    return [_path_record(k, tasks[k], evaluator.adapt_task(adapter, tasks[k]), adapter.batches,
                         paths_per_step) for k in task_indices]


def _path_record(k: int, task: Task, result: AdaptResult, batches: list[EpisodeBatch],
                 paths_per_step: int) -> dict:
    return {"held_out": k, "task": task, "goal": (task.params["goal_x"], task.params["goal_y"]),
            "returns": result.returns, "paths": [episode_paths(b, paths_per_step) for b in batches]}


def plot_navigation_paths(cfg: ExperimentConfig, weights: dict, out_png, num_goals: int = 4,
                          adapt_steps: int | None = None, episodes_per_step: int | None = None,
                          paths_per_step: int = 1, task_indices: list[int] | None = None) -> list[dict]:
    """Draw, for the first ``num_goals`` held-out goals (or held-out tasks ``task_indices``), the paths of the
    policy ``weights`` before adaptation and after each standard adaptation step, one panel per goal;
    writes ``out_png`` and returns :func:`navigation_paths`' records. ``paths_per_step`` episodes are drawn
    per step; panel titles give the mean return over all ``episodes_per_step`` episodes of each step."""
    if cfg.env != "navigation-2d":
        raise RecordingError(f"the paths plot is for navigation-2d, not {cfg.env}")
    if task_indices is None:
        task_indices = list(range(min(num_goals, cfg.num_test_tasks)))
    runs = navigation_paths(cfg, weights, task_indices, adapt_steps, episodes_per_step, paths_per_step)
    _draw_paths(runs, out_png, _PATHS_TITLE.format(cfg=cfg))
    return runs


_PATHS_TITLE = "{cfg.env} / {cfg.model.kind}: paths before and after standard adaptation"


def _step_label(s: int) -> str:
    return "before adaptation" if s == 0 else f"after {s} step{'s' if s > 1 else ''}"


def _draw_paths(runs: list[dict], out_png, title: str) -> None:
    """One panel per :func:`navigation_paths` record: paths per step (before: dashed gray), start, goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(runs), 4)
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.5 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(run["paths"])))
        for s, paths in enumerate(run["paths"]):
            for j, p in enumerate(paths):
                ax.plot(p[:, 0], p[:, 1], color="0.6" if s == 0 else colors[s], lw=1.0 if s == 0 else 1.4,
                        ls="--" if s == 0 else "-", label=_step_label(s) if j == 0 else None)
        ax.plot(0, 0, "ko", ms=4, label="start")
        ax.plot(*run["goal"], marker="*", color="red", ms=14, ls="none", label="goal")
        gx, gy = run["goal"]
        ax.set_title(f"held-out task {run['held_out']}: goal ({gx:.2f}, {gy:.2f})\nreturn "
                     + " → ".join(f"{r:.1f}" for r in run["returns"]), fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="best")
    fig.suptitle(textwrap.fill(title, width=int(12 * 3.3 * cols)), fontsize=9)  # ~12 characters per inch
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- recording
def load_checkpoint(path) -> tuple[ExperimentConfig, dict, Path]:
    """Config and weights of a checkpoint directory (or of a run directory holding ``checkpoint/``), read
    with the safe loaders (never unpickles); ``CheckpointError`` when missing or unreadable."""
    from ssm_metarl_ray.utils.checkpoint import CONFIG, load_config, load_tensors

    p = Path(path)
    if not (p / CONFIG).is_file() and (p / "checkpoint" / CONFIG).is_file():
        p = p / "checkpoint"
    return load_config(p), load_tensors(p), p


def mp4_encoder() -> str | None:
    """The installed MP4 encoder imageio can use (``imageio-ffmpeg`` or ``av``), or None."""
    import importlib.util

    return next((m for m in ("imageio_ffmpeg", "av") if importlib.util.find_spec(m) is not None), None)


def check_record_request(cfg: ExperimentConfig, task_index: int, out_path, adapt_steps: int = 0,
                         episodes_per_step: int | None = None) -> Path:
    """``out_path`` as a Path once the request is possible; ``RecordingError`` (one line) otherwise."""
    from ssm_metarl_ray.envs.registry import get_family

    out = Path(out_path)
    suffix = out.suffix.lower()
    if get_family(cfg.env).mujoco:
        if suffix not in VIDEO_SUFFIXES:
            raise RecordingError(f"--record {str(out)!r}: {cfg.env} records a .gif or .mp4, "
                                 f"not {suffix or 'no suffix'!r}")
        if suffix == ".mp4" and mp4_encoder() is None:
            raise RecordingError("no MP4 encoder is installed (pip install imageio-ffmpeg); use a .gif path")
    elif cfg.env == "navigation-2d":
        if suffix != ".png":
            raise RecordingError(f"--record {str(out)!r}: navigation-2d has no 3-D rendering; give a .png "
                                 "path for the plot of its paths")
    else:
        raise RecordingError(f"{cfg.env} has no renderer; recordings are for the MuJoCo families "
                             "(.gif/.mp4) and navigation-2d (.png paths plot)")
    if not 0 <= task_index < cfg.num_test_tasks:
        raise RecordingError(f"--task must be a held-out task index in [0, {cfg.num_test_tasks - 1}], "
                             f"got {task_index}")
    if adapt_steps < 0:
        raise RecordingError(f"--adapt-steps must be >= 0, got {adapt_steps}")
    if episodes_per_step is not None and episodes_per_step <= 0:
        raise RecordingError(f"--episodes-per-step must be a positive integer, got {episodes_per_step}")
    if not out.parent.is_dir():
        raise RecordingError(f"--record {str(out)!r}: directory {str(out.parent)!r} does not exist")
    return out


_PROBE = "from mujoco.{0} import GLContext\nc = GLContext(8, 8)\nc.make_current()\nc.free()\n"


def gl_backend_works(name: str) -> bool:
    """Whether MuJoCo can create an offscreen OpenGL context with backend ``name`` (probed in a subprocess:
    a failed backend can leave PyOpenGL unusable for the next one in the same process)."""
    env = {**os.environ, "MUJOCO_GL": name}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE.format(name)], env=env, capture_output=True,
                           timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def find_gl_backend() -> str | None:
    """``MUJOCO_GL`` when it names a renderer (trusted as set), else the first of :data:`GL_BACKENDS` that
    works here (``MUJOCO_GL`` unset or ``disable``), else None."""
    name = os.environ.get("MUJOCO_GL", "").strip().lower()
    if name in GL_BACKENDS:
        return name
    return next((b for b in GL_BACKENDS if gl_backend_works(b)), None)


def use_gl_backend() -> str:
    """Select the GL backend for this process (sets ``MUJOCO_GL``); ``RecordingError`` when there is none."""
    name = find_gl_backend()
    if name is None:
        raise RecordingError("no OpenGL backend for MuJoCo's offscreen renderer: MUJOCO_GL=egl needs libEGL "
                             "(apt-get install libegl1), osmesa needs libOSMesa (apt-get install libosmesa6)")
    os.environ["MUJOCO_GL"] = name
    return name


class _FilmingEnv:
    """One env as the RolloutWorker steps it (``set_task``, ``reset``, ``step``), rendering a frame after
    the reset and after every step."""

    def __init__(self, env):
        self.env, self.frames = env, []

    def set_task(self, task: Task) -> None:
        self.env.set_task(task)

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self.frames.append(self.env.render())
        return out

    def step(self, action):
        out = self.env.step(action)
        self.frames.append(self.env.render())
        return out


def write_video(frames: list[np.ndarray], out: Path, fps: int) -> None:
    """GIF (pillow, looping) or MP4 (imageio's ffmpeg or pyav plugin) of ``frames`` at ``fps``."""
    import imageio.v3 as iio

    if out.suffix.lower() == ".gif":
        iio.imwrite(out, np.stack(frames), extension=".gif", duration=round(1000 / fps), loop=0)
    elif mp4_encoder() == "imageio_ffmpeg":
        import imageio.v2 as iio2

        iio2.mimwrite(out, list(_even(frames)), format="FFMPEG", fps=fps, macro_block_size=1)
    else:
        iio.imwrite(out, _even(frames), plugin="pyav", codec="h264", fps=fps)


def _even(frames: list[np.ndarray]) -> np.ndarray:
    """Frames cropped to even width and height (H.264's 4:2:0 chroma needs them)."""
    h, w = (d - d % 2 for d in frames[0].shape[:2])
    return np.stack(frames)[:, :h, :w]


def record_rollout(checkpoint_dir, task_index: int, out_path, adapt_steps: int = 0,
                   episodes_per_step: int | None = None, width: int = 480, height: int = 320) -> dict:
    """Render one episode of a checkpoint's policy on held-out task ``task_index`` after ``adapt_steps``
    standard adaptation steps (``episodes_per_step`` fresh episodes each; default the run's) and write it
    to ``out_path`` (.gif, or .mp4 with an encoder); a navigation-2d checkpoint writes the paths plot of
    that task to a .png instead. Returns ``{"path", "task_index", "task", "adapt_returns" (mean return of the
    adaptation episodes after 0..adapt_steps steps), "return" (of the recorded episode), "frames", "gl"}``.

    Raises ``CheckpointError`` for an unreadable checkpoint or weights that do not fit its config, and
    :class:`RecordingError` for a request that cannot be recorded (checked before any work)."""
    from ssm_metarl_ray.utils.checkpoint import CheckpointError

    cfg, weights, ckpt = load_checkpoint(checkpoint_dir)
    out = check_record_request(cfg, task_index, out_path, adapt_steps, episodes_per_step)
    task = held_out_tasks(cfg)[task_index]
    gl = None if cfg.env == "navigation-2d" else use_gl_backend()
    try:
        evaluator, adapter = standard_evaluator(cfg, weights, adapt_steps, episodes_per_step)
    except RuntimeError as e:  # weights that do not fit the configured model
        raise CheckpointError(f"checkpoint {str(ckpt)!r} does not match its config: {str(e).splitlines()[0]}") from None
    result = evaluator.adapt_task(adapter, task)
    rec = {"path": out, "task_index": task_index, "task": task, "adapt_returns": result.returns,
           "return": None, "frames": 0, "gl": gl}
    if gl is None:  # navigation-2d: the paths plot of this task
        _draw_paths([_path_record(task_index, task, result, adapter.batches, 1)], out,
                    _PATHS_TITLE.format(cfg=cfg))
        return rec
    frames, rec["return"], fps = _film_episode(evaluator, task, result, width, height)
    write_video(frames, out, fps)
    return {**rec, "frames": len(frames)}


def _film_episode(evaluator: Evaluator, task: Task, result: AdaptResult, width: int,
                  height: int) -> tuple[list[np.ndarray], float, int]:
    """One episode with the adapted parameters, stepped by the evaluator's RolloutWorker (same action
    sampling and scaling as evaluation) in a rendering env that follows the robot (camera ``track``):
    ``(frames, episode return, real-time frames per second)``."""
    worker = evaluator.worker
    # a MuJoCo env (renders; has ``dt``)
    env: Any = make_env(worker.env_name, render_mode="rgb_array", width=width, height=height, camera_name="track")
    film = _FilmingEnv(env)
    worker.envs[0] = cast(MetaEnv, film)  # duck-typed: what the worker calls (set_task, reset, step)
    try:
        batch = worker.sample(task, 1, result.params)
    finally:
        env.close()
    return film.frames, float(batch.episode_returns[0]), max(1, round(1 / env.dt))


def describe_recording(rec: dict) -> str:
    """One line for the CLI: what was written, the task and the returns."""
    steps = len(rec["adapt_returns"]) - 1
    rets = " -> ".join(f"{r:.1f}" for r in rec["adapt_returns"])
    when = f"before and after {steps} standard adaptation step{'s' if steps > 1 else ''}" if steps else \
        "without adaptation"
    line = (f"wrote {rec['path']}: held-out task {rec['task_index']} ({describe(rec['task'])}), "
            f"mean return {when}: {rets}")
    if rec["return"] is not None:
        line += f"; recorded episode return {rec['return']:.1f} ({rec['frames']} frames, " \
                f"MUJOCO_GL={rec['gl']})"
    return line
