"""What ``ssm-metarl train`` and ``evaluate`` do: meta-train, checkpoint, evaluate, write outputs.

Outputs in ``output_dir``: ``checkpoint/`` (config + weights + learner state + buffer), ``metrics.json``
(training history and held-out evaluation), ``adaptation.png`` (return vs adaptation steps).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.envs import make_env, task_splits
from ssm_metarl_ray.replay.buffer import ExperienceBuffer
from ssm_metarl_ray.training.evaluate import Evaluator, format_table, plot_results, summarize
from ssm_metarl_ray.training.meta_train import LocalSampler, TrainState, build_state, meta_train
from ssm_metarl_ray.utils.checkpoint import BUFFER, CheckpointError, save_checkpoint


def _progress(state: TrainState, m: dict) -> None:
    n = state.cfg.iterations
    print(f"[iter {m['iteration']:>4}/{n}] pre-adapt return {m['meta/pre_return']:9.2f} | post-adapt "
          f"{m['meta/post_return']:9.2f} | kl {m['meta/kl']:.4f} | steps {m['env_steps']:>9} | "
          f"sample {m['time/sample_s']:.1f}s update {m['time/update_s']:.1f}s", file=sys.stderr, flush=True)


def evaluate_modes(cfg: ExperimentConfig, weights: dict, test_tasks, buffer: ExperienceBuffer | None,
                   modes: list[str], version: int = 0) -> dict[str, dict]:
    evaluator = Evaluator(cfg, seed=cfg.seed + 1)
    evaluator.set_weights({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in weights.items()},
                          version)
    return {mode: summarize(evaluator.evaluate(test_tasks, mode, buffer)) for mode in modes}


def write_outputs(out: Path, cfg: ExperimentConfig, results: dict, history: list[dict], extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"config": cfg.to_dict(), "evaluation": results, "history": history, **extra}
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(out / "metrics.json")
    plot_results(results, out / "adaptation.png",
                 f"{cfg.env} / {cfg.model.kind}: held-out return vs adaptation steps ({cfg.num_test_tasks} tasks)")


def run_training(cfg: ExperimentConfig, out: Path, modes: list[str], verbose: bool = True,
                 sampler=None) -> dict:
    t0 = time.perf_counter()
    state = build_state(cfg)
    if verbose:
        print(f"meta-training {cfg.model.kind} on {cfg.env}: {cfg.iterations} iterations x "
              f"{cfg.meta.meta_batch_size} tasks x {cfg.meta.episodes_per_task} episodes "
              f"({len(state.train_tasks)} train / {len(state.test_tasks)} held-out tasks)", file=sys.stderr)
    sampler = sampler or LocalSampler(cfg, seed=cfg.seed)
    meta_train(state, sampler, on_iteration=_progress if verbose else None)
    train_s = time.perf_counter() - t0
    weights = state.learner.policy.state_dict()
    save_checkpoint(out / "checkpoint", cfg, weights, state.learner.state_dict(), state.buffer,
                    {"iteration": state.iteration, "env_steps": state.env_steps})
    if verbose:
        print(f"evaluating adaptation on {len(state.test_tasks)} held-out tasks ({', '.join(modes)})...",
              file=sys.stderr)
    results = evaluate_modes(cfg, weights, state.test_tasks, state.buffer, modes, state.learner.version)
    eval_s = time.perf_counter() - t0 - train_s
    write_outputs(out, cfg, results, state.history,
                  {"env_steps": state.env_steps, "train_seconds": train_s, "eval_seconds": eval_s})
    _report(cfg, results, out)
    return results


def run_evaluation(cfg: ExperimentConfig, weights: dict, ckpt: Path, out: Path, modes: list[str]) -> dict:
    env = make_env(cfg.env)
    _, test_tasks = task_splits(env, cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)
    buffer = None
    if (ckpt / BUFFER).is_file():
        try:
            buffer = ExperienceBuffer.load(ckpt / BUFFER)
        except ValueError as e:
            raise CheckpointError(f"checkpoint buffer {str(ckpt / BUFFER)!r} is not readable: {e}") from None
    elif "hybrid" in modes:
        raise CheckpointError(f"checkpoint {str(ckpt)!r} has no {BUFFER}: hybrid evaluation needs it")
    try:
        results = evaluate_modes(cfg, weights, test_tasks, buffer, modes)
    except RuntimeError as e:  # weights that do not fit the configured model
        raise CheckpointError(f"checkpoint {str(ckpt)!r} does not match its config: {str(e).splitlines()[0]}")
    write_outputs(out, cfg, results, [], {"checkpoint": str(ckpt)})
    _report(cfg, results, out)
    return results


def _report(cfg: ExperimentConfig, results: dict, out: Path) -> None:
    print(f"\nHeld-out return ({cfg.env}, {cfg.model.kind}, {cfg.num_test_tasks} tasks, mean ± s.e.m.) "
          f"by adaptation step:")
    print(format_table(results))
    for mode, r in results.items():
        gain = r["mean"][-1] - r["mean"][0]
        print(f"{mode}: {len(r['mean']) - 1} adaptation steps change the return by {gain:+.2f}")
    print(f"wrote {out / 'checkpoint'}, {out / 'metrics.json'}, {out / 'adaptation.png'}")
