"""The README's pictures, from committed benchmark results and checkpoints (one picture of each kind).

  python docs/make_pictures.py        # -> docs/images/*.png, *.gif (a few minutes: trains a small
                                      #    navigation-2d policy for the paths plot, renders a cheetah)

* ``adaptation_navigation.png`` / ``adaptation_halfcheetah_dir.png``: the adaptation plot (with MAML 2017's
  published curve) of ``benchmarks/results/learning/<family>/maml-mlp-s0.json``;
* ``paths_navigation.png``: paths before / after each adaptation step on 4 held-out goals, for a policy
  meta-trained here with ``ssm-metarl train --env navigation-2d --model mlp --preset maml2017
  --iterations 30`` (a third of the benchmark's budget);
* ``halfcheetah_dir.gif``: one held-out task of the committed HalfCheetahDir checkpoint after one adaptation
  step (``ssm-metarl rollout``; needs an OpenGL backend, see README "Pictures").
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
RESULTS = ROOT / "benchmarks" / "results" / "learning"


def adaptation_plots() -> None:
    from ssm_metarl_ray.training.evaluate import plot_results

    for env, name in (("navigation-2d", "navigation"), ("halfcheetah-dir", "halfcheetah_dir")):
        doc = json.loads((RESULTS / env / "maml-mlp-s0.json").read_text())
        plot_results(doc["evaluation"], OUT / f"adaptation_{name}.png",
                     f"{env} / mlp, maml2017 protocol: held-out return ({len(doc['test_task_params'])} tasks)",
                     env=env)


def paths_plot() -> None:
    from ssm_metarl_ray.viz import load_checkpoint, plot_navigation_paths

    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "ssm_metarl_ray", "train", "--env", "navigation-2d", "--model", "mlp",
                        "--preset", "maml2017", "--iterations", "30", "--num-workers", "0", "--adaptation-mode",
                        "standard", "--num-test-tasks", "4", "--quiet", "--output-dir", d], check=True)
        cfg, weights, _ = load_checkpoint(Path(d) / "checkpoint")
        plot_navigation_paths(cfg, weights, OUT / "paths_navigation.png", num_goals=4)


def cheetah_gif() -> None:
    ckpt = RESULTS / "halfcheetah-dir" / "checkpoints" / "maml-mlp-s0"
    subprocess.run([sys.executable, "-m", "ssm_metarl_ray", "rollout", "--checkpoint", str(ckpt), "--task", "0",
                    "--adapt-steps", "1", "--size", "240x160", "--record", str(OUT / "halfcheetah_dir.gif")],
                   check=True)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    adaptation_plots()
    paths_plot()
    cheetah_gif()
    print("wrote", ", ".join(sorted(p.name for p in OUT.iterdir())))
