"""Pictures: MAML 2017's published curve on the adaptation plot (the anchors module equals the committed
CSVs), the navigation-2d paths plot from a tiny trained policy, and ``rollout`` recordings (MuJoCo GIF
rendered offscreen, skipped where no OpenGL backend works; navigation-2d paths PNG; one-line errors)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ssm_metarl_ray.anchors import LABEL, MAML2017, METHODS, maml2017
from ssm_metarl_ray.config import AdaptConfig, ExperimentConfig, MetaConfig, ModelConfig
from ssm_metarl_ray.envs import make_env
from ssm_metarl_ray.rollout_cli import main as rollout_main
from ssm_metarl_ray.run import run_training
from ssm_metarl_ray.runtime.config import RuntimeConfig
from ssm_metarl_ray.training.evaluate import plot_results
from ssm_metarl_ray.types import EnvSpec
from ssm_metarl_ray.utils.checkpoint import save_checkpoint
from ssm_metarl_ray.viz import GL_BACKENDS, find_gl_backend, load_checkpoint, plot_navigation_paths

ROOT = Path(__file__).resolve().parents[1]
ANCHOR_CSVS = sorted((ROOT / "benchmarks" / "anchors").glob("maml2017_fig*.csv"))
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.timeout(300)


def _csv_rows() -> list[dict]:
    rows = []
    for path in ANCHOR_CSVS:
        with open(path) as f:
            rows += [{**row, "file": path.name} for row in csv.DictReader(f)]
    return rows


def test_anchors_module_equals_the_committed_csvs():
    rows = _csv_rows()
    assert len(ANCHOR_CSVS) == 2 and rows
    by_task = {ref["task"]: (family, ref) for family, ref in MAML2017.items()}
    assert {row["task"] for row in rows} == set(by_task)  # every published task mapped, none invented
    for task, (family, ref) in by_task.items():
        mine = [r for r in rows if r["task"] == task]
        assert {r["file"] for r in mine} == {ref["source"]}
        for method in METHODS:
            curve = sorted((int(r["grad_steps"]), float(r["mean_return"]))
                           for r in mine if r["method"] == method)
            assert [s for s, _ in curve] == list(range(len(curve))) and len(curve) == 4
            assert ref[method] == [m for _, m in curve], (family, method)
        (oracle,) = [r for r in mine if r["method"] == "oracle"]
        assert oracle["grad_steps"] == "n/a" and ref["oracle"] == float(oracle["mean_return"])
        assert {r["method"] for r in mine} == {*METHODS, "oracle"}
    assert set(MAML2017) == {"navigation-2d", "halfcheetah-vel", "halfcheetah-dir"}  # ant-dir: not published
    assert maml2017("ant-dir") is None and maml2017(None) is None


RESULTS = {"standard": {"mean": [-60.0, -30.0], "sem": [3.0, 2.0]},
           "hybrid": {"mean": [-60.0, -25.0], "sem": [3.0, 2.5]}}


@pytest.mark.parametrize("env, n_lines",
                         [("navigation-2d", 4), ("halfcheetah-dir", 4), ("ant-dir", 0), (None, 0)])
def test_plot_results_draws_the_published_curves_where_they_exist(tmp_path, monkeypatch, env, n_lines):
    import matplotlib.figure

    drawn = {}
    savefig = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):  # the figure as written: its legend labels and x-range
        ax = fig.axes[0]
        drawn.update(labels=[t.get_text() for t in ax.get_legend().get_texts()], ticks=list(ax.get_xticks()))
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_results(RESULTS, tmp_path / "a.png", "title", env=env)
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
    refs = [label for label in drawn["labels"] if label.startswith(LABEL)]
    assert drawn["labels"][:2] == ["standard", "hybrid"] and len(refs) == n_lines
    if n_lines:
        assert refs[0] == LABEL and f"{LABEL}: oracle" in refs
        assert drawn["ticks"] == [0, 1, 2, 3]  # the published curve spans 0-3 steps
    else:
        assert drawn["ticks"] == [0, 1]


# ---------------------------------------------------------------------------------------- navigation
@pytest.fixture(scope="module")
def nav_run(tmp_path_factory) -> Path:
    """A tiny meta-trained navigation-2d SSM run (in-process, seconds), evaluated with 2 adaptation steps."""
    cfg = ExperimentConfig(env="navigation-2d", iterations=2, num_train_tasks=20, num_test_tasks=3, seed=0,
                           model=ModelConfig(hidden_size=16, num_layers=1, state_size=8),
                           meta=replace(MetaConfig(), meta_batch_size=4, episodes_per_task=3),
                           adapt=replace(AdaptConfig(), adapt_steps=2, episodes_per_step=3,
                                         buffer_size=20_000))
    out = tmp_path_factory.mktemp("nav")
    run_training(cfg, out, ["standard"], verbose=False, runtime=RuntimeConfig(num_workers=0))
    return out


def test_navigation_paths_plot_from_a_trained_policy(nav_run, tmp_path):
    cfg, weights, _ = load_checkpoint(nav_run / "checkpoint")
    runs = plot_navigation_paths(cfg, weights, tmp_path / "paths.png", num_goals=2, paths_per_step=2)
    assert (tmp_path / "paths.png").read_bytes()[:8] == PNG
    per_task = json.loads((nav_run / "metrics.json").read_text())["evaluation"]["standard"]["per_task"]
    assert [r["returns"] for r in runs] == per_task[:2]  # the same adaptation as the held-out evaluation
    for r in runs:
        assert len(r["paths"]) == 3 and all(len(p) == 2 for p in r["paths"])  # before + 2 steps, 2 paths each
        for p in (p for step in r["paths"] for p in step):
            assert p.ndim == 2 and p.shape[1] == 2 and np.array_equal(p[0], [0.0, 0.0])  # from the origin
            assert np.all(np.abs(np.diff(p, axis=0)) <= 0.1 + 1e-6)  # moves at most 0.1 per axis and step


def test_rollout_record_png_for_navigation(nav_run, tmp_path, capsys):
    out = tmp_path / "goal1.png"
    assert rollout_main(["--checkpoint", str(nav_run), "--task", "1", "--adapt-steps", "1",
                         "--record", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out}: held-out task 1 (goal_x=") and "1 standard adaptation step" in line


def test_rollout_is_a_subcommand_of_the_cli(nav_run, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "goal0.png"
    r = subprocess.run([sys.executable, "-m", "ssm_metarl_ray", "rollout", "--checkpoint", str(nav_run), "--task",
                        "0", "--record", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"})
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("args, needle", [
    (["--task", "3", "--record", "{tmp}/x.png"], "--task must be a held-out task index in [0, 2], got 3"),
    (["--task", "0", "--record", "{tmp}/x.gif"], "navigation-2d has no 3-D rendering; give a .png path"),
    (["--task", "0", "--record", "{tmp}/no/such/dir/x.png"], "does not exist"),
    (["--task", "0", "--record", "{tmp}/x.png", "--adapt-steps", "-1"], "--adapt-steps must be >= 0"),
    (["--task", "0", "--record", "{tmp}/x.png", "--episodes-per-step", "0"], "--episodes-per-step must be"),
    (["--task", "0", "--record", "{tmp}/x.png", "--size", "big"], "--size must be WIDTHxHEIGHT"),
    (["--record", "{tmp}/x.png"], "the following arguments are required: --task"),
])
def test_rollout_bad_input_one_line_exit_2_nothing_written(nav_run, tmp_path, capsys, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    assert rollout_main(["--checkpoint", str(nav_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssm-metarl: error: ") and needle in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_rollout_missing_checkpoint_is_a_checkpoint_error(tmp_path, capsys):
    assert rollout_main(["--checkpoint", str(tmp_path / "none"), "--task", "0", "--record",
                         str(tmp_path / "x.gif")]) == 2
    assert "is not readable: no config.json in it" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- MuJoCo
@pytest.fixture(scope="module")
def cheetah_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny MLP policy for halfcheetah-vel as a checkpoint (recording needs no training)."""
    cfg = ExperimentConfig(env="halfcheetah-vel", num_train_tasks=4, num_test_tasks=2,
                           model=ModelConfig(kind="mlp", hidden_size=8, num_layers=1),
                           adapt=replace(AdaptConfig(), adapt_steps=1, episodes_per_step=1)).validate()
    policy = EnvSpec.of(make_env(cfg.env)).make_policy(cfg.model)
    return save_checkpoint(tmp_path_factory.mktemp("cheetah") / "checkpoint", cfg, policy.state_dict())


@pytest.mark.mujoco
def test_rollout_mp4_without_an_encoder_says_use_gif(cheetah_checkpoint, tmp_path, capsys):
    from ssm_metarl_ray.viz import mp4_encoder

    if mp4_encoder() is not None:
        pytest.skip(f"an MP4 encoder ({mp4_encoder()}) is installed")
    assert rollout_main(["--checkpoint", str(cheetah_checkpoint), "--task", "0", "--record",
                         str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "no MP4 encoder is installed (pip install imageio-ffmpeg); use a .gif path" in err


@pytest.mark.mujoco
@pytest.mark.timeout(400)
def test_rollout_records_a_mujoco_gif(cheetah_checkpoint, tmp_path):
    """One adaptation step (1 episode), then one rendered 200-step episode at 64x48, in a subprocess (the
    offscreen GL context and MUJOCO_GL stay out of the test process)."""
    backend = find_gl_backend()
    if backend is None:
        pytest.skip(f"no OpenGL backend for MuJoCo's offscreen renderer (tried MUJOCO_GL="
                    f"{', '.join(GL_BACKENDS)}): install libEGL (apt-get install libegl1) or OSMesa "
                    "(apt-get install libosmesa6)")
    out = tmp_path / "cheetah.gif"
    env = {**os.environ, "MUJOCO_GL": backend, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "ssm_metarl_ray.rollout_cli", "--checkpoint",
                        str(cheetah_checkpoint), "--task", "1", "--adapt-steps", "1", "--record", str(out),
                        "--size", "64x48"], capture_output=True, text=True, env=env, timeout=380, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"(201 frames, MUJOCO_GL={backend})" in r.stdout and "held-out task 1 (goal_velocity=" in r.stdout
    import imageio.v3 as iio

    frames = iio.imread(out, index=None)
    assert frames.shape == (201, 48, 64, 3)  # reset + 200 steps
    assert frames.std() > 5 and np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 1  # it moves
