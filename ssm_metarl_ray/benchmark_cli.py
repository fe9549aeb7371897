"""The ``ssm-metarl benchmark`` subcommand: SSM-MetaRL-Unified's ``experiments/serious_benchmark.py`` flags.

One benchmark meta-trains policy ``--method`` on task family ``--task`` for ``--epochs`` meta-iterations,
then evaluates adaptation on the held-out test tasks: in ``--adaptation-mode``, and for ``hybrid`` also in
``standard`` for comparison. Everything else is ``ssm-metarl train``'s default, and sampling stays in this
process (``--num-workers 0``: no Ray cluster) unless ``--num-workers`` says otherwise. ``--smoke``: tiny
sizes and one meta-iteration (seconds).

``--output-dir`` (default ``runs/benchmark/<task>-<method>-<mode>-s<seed>``) receives what ``train`` writes
(checkpoint, ``metrics.json`` with per-task returns, ``adaptation.png``, ``progress.csv``) and
``benchmark.json``: the flags, config, env steps, wall-clock and the held-out return (mean and s.e.m. over
test tasks) after 0, 1, ... adaptation steps per mode. Bad values: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from ssm_metarl_ray.config import ADAPTATION_MODES, MODELS, AdaptConfig, ExperimentConfig
from ssm_metarl_ray.utils.atomic import write_text

RESULT = "benchmark.json"
# --smoke: train-flag values (tiny sizes, one meta-iteration)
SMOKE = {"iterations": 1, "meta_batch_size": 2, "episodes_per_task": 2, "num_test_tasks": 2, "adapt_steps": 1,
         "hidden_size": 16, "num_layers": 1}


def add_benchmark_parser(sub) -> argparse.ArgumentParser:
    """The ``benchmark`` subparser (the seed's flag spellings and this CLI's dashed ones)."""
    a = AdaptConfig()
    p = sub.add_parser("benchmark", help="meta-train one policy on one task family, then compare adaptation "
                       "modes on held-out tasks; writes benchmark.json (experiments/serious_benchmark.py)")
    p.add_argument("--task", required=True, help="task family (see `ssm-metarl envs`) or a gymnasium id")
    p.add_argument("--method", default="ssm", help=f"policy core: {', '.join(MODELS)}")
    p.add_argument("--adaptation-mode", "--adaptation_mode", dest="adaptation_mode", default="hybrid",
                   help="standard, or hybrid (evaluated next to standard)")
    p.add_argument("--epochs", type=int, default=ExperimentConfig().iterations, help="meta-iterations")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and one meta-iteration: checks it runs")
    p.add_argument("--seed", type=int, default=ExperimentConfig().seed)
    p.add_argument("--buffer-size", "--buffer_size", dest="buffer_size", type=int, default=a.buffer_size)
    p.add_argument("--experience-batch-size", "--experience_batch_size", dest="experience_batch_size",
                   type=int, default=a.experience_batch_size)
    p.add_argument("--experience-weight", "--experience_weight", dest="experience_weight", type=float,
                   default=a.experience_weight, help="replay-loss weight in hybrid mode, in [0, 1]")
    p.add_argument("--num-workers", type=int, default=0,
                   help="Ray rollout-worker actors (default 0: sample in this process, no Ray)")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", default=None,
                   help="default: runs/benchmark/<task>-<method>-<mode>-s<seed>")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
    return p


def train_namespace(args: argparse.Namespace) -> tuple[argparse.Namespace, str | None]:
    """The ``train`` flags this benchmark amounts to (``train``'s defaults for the rest), after checking the
    benchmark's own flags (``UsageError``), and the note for a gymnasium id given as ``--task``."""
    from ssm_metarl_ray.cli import _check, build_parser, resolve_env_flag

    _check(args.method in MODELS, f"unknown --method {args.method!r}; allowed: {', '.join(MODELS)}")
    _check(args.adaptation_mode in ADAPTATION_MODES,
           f"unknown --adaptation-mode {args.adaptation_mode!r}; allowed: {', '.join(ADAPTATION_MODES)}")
    _check(args.epochs > 0, f"--epochs must be a positive integer, got {args.epochs}")
    task, note = resolve_env_flag(args.task, "--task")
    ns = build_parser().train_parser.parse_args([])
    name = f"{task}-{args.method}-{args.adaptation_mode}-s{args.seed}{'-smoke' if args.smoke else ''}"
    vars(ns).update(env=task, model=args.method, adaptation_mode=args.adaptation_mode, iterations=args.epochs,
                    seed=args.seed, buffer_size=args.buffer_size, experience_weight=args.experience_weight,
                    experience_batch_size=args.experience_batch_size, num_workers=args.num_workers,
                    quiet=args.quiet, output_dir=args.output_dir or str(Path("runs") / "benchmark" / name))
    if args.smoke:
        vars(ns).update(SMOKE)
    return ns, note


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Validate everything (one-line ``UsageError``, nothing written), train + evaluate, write the result."""
    from ssm_metarl_ray import cli

    ns, note = train_namespace(args)
    rt = cli.runtime_from_args(ns)
    cfg = cli.config_from_args(ns)
    cli._check_memory(cfg, rt.address)
    out = cli._check_output_dir(cfg.output_dir)  # last: it creates the directory
    cli.print_note(note)
    modes = ["standard", "hybrid"] if args.adaptation_mode == "hybrid" else ["standard"]
    from ssm_metarl_ray.run import run_training  # torch etc.: only once the arguments are valid

    t0 = time.perf_counter()
    results = run_training(cfg, out, modes, verbose=not args.quiet, runtime=rt)
    path = write_result(out, benchmark_result(args, cfg, out, results, time.perf_counter() - t0))
    print(f"wrote {path}")
    return 0


def benchmark_result(args: argparse.Namespace, cfg: ExperimentConfig, out: Path, results: dict,
                     wall_s: float) -> dict:
    """The ``benchmark.json`` document: flags, config, env steps, wall-clock and held-out returns per mode
    (index = adaptation steps taken), with hybrid's gain over standard per step when both ran."""
    import torch

    metrics = json.loads((out / "metrics.json").read_text())
    returns = {m: {"mean": r["mean"], "sem": r["sem"]} for m, r in results.items()}
    doc = {
        "benchmark": "ssm-metarl benchmark", "flags": {k: v for k, v in vars(args).items() if k != "command"},
        "task": cfg.env, "method": cfg.model.kind, "adaptation_mode": args.adaptation_mode,
        "epochs": cfg.iterations, "smoke": args.smoke, "config": cfg.to_dict(),
        "env_steps": metrics.get("env_steps"),  # training; evaluation's are on top
        "wall_clock_s": {"total": round(wall_s, 2), "train": round(metrics.get("train_seconds", 0.0), 2),
                         "eval": round(metrics.get("eval_seconds", 0.0), 2)},
        "num_test_tasks": cfg.num_test_tasks, "held_out_return": returns,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__,
                    "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]},
        "files": {"metrics": "metrics.json", "checkpoint": "checkpoint", "plot": "adaptation.png"},
    }
    if {"standard", "hybrid"} <= set(returns):
        pairs = zip(returns["hybrid"]["mean"], returns["standard"]["mean"])
        doc["hybrid_minus_standard"] = [h - s for h, s in pairs]
    return doc


def write_result(out: Path, doc: dict) -> Path:
    """Write ``doc`` to ``out/benchmark.json`` (atomically)."""
    return write_text(out / RESULT, json.dumps(doc, indent=2) + "\n")
