"""Where a rollout worker's time goes in one MetaMAML sampling call (``RolloutWorker.sample_tasks``): the
policy's forward steps, action sampling, the simulator, the inner update, advantage processing and the
rest of the rollout loop, as fractions of the call's wall time; with the raw env-step rate for scale.

    python benchmarks/inference_share.py            # -> benchmarks/results/inference_share.json
    python benchmarks/inference_share.py --smoke    # seconds; writes nothing

Setup: ``halfcheetah-vel`` (and ``navigation-2d``, whose env step is ~50x cheaper), the default SSM
policy and ``MetaConfig`` (meta-batch 10 tasks x 10 episodes, one inner step), one worker in this
process with one torch / BLAS thread (what a Ray rollout worker runs). Each component is timed by
wrapping it with ``time.perf_counter`` (the wrappers cost ~0.2 us per call); "other" is the call's wall
time minus the timed components (buffer writes, input assembly, env bookkeeping).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, raw_env_rate, write  # noqa: E402

TIMED = defaultdict(float)  # component -> seconds


def _timed(name: str, fn: Callable) -> Callable:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            TIMED[name] += time.perf_counter() - t0
    return wrapper


def _instrument() -> None:
    """Wrap the components (class attributes and the worker module's functions) with timers."""
    from ssm_metarl_ray.models import grouped_step, packed_step
    from ssm_metarl_ray.rollout import worker

    packed_step.PackedStep.step = _timed("policy_step", packed_step.PackedStep.step)
    grouped_step.GroupedPolicy.step = _timed("policy_step", grouped_step.GroupedPolicy.step)
    worker.sample_action = _timed("action_sampling", worker.sample_action)
    worker.process_episodes = _timed("advantages", worker.process_episodes)
    worker.RolloutWorker._inner_step = _timed("inner_update", worker.RolloutWorker._inner_step)


def measure(env_name: str, iterations: int, meta_batch: int, episodes: int) -> dict:
    import torch

    from ssm_metarl_ray.config import MetaConfig, ModelConfig
    from ssm_metarl_ray.envs import make_env, task_splits
    from ssm_metarl_ray.rollout.worker import RolloutWorker

    torch.manual_seed(0)
    meta = replace(MetaConfig(), meta_batch_size=meta_batch, episodes_per_task=episodes)
    worker = RolloutWorker(env_name, ModelConfig(kind="ssm"), meta, meta_batch * episodes, seed=0)
    for env in worker.envs:  # the simulator: each env instance's step
        env.step = _timed("env_step", env.step)
    tasks = task_splits(make_env(env_name), meta_batch, 1, 0)[0]
    rows = []
    for it in range(iterations + 1):  # the first call warms up
        TIMED.clear()
        t0 = time.perf_counter()
        batches = worker.sample_tasks(tasks)
        wall = time.perf_counter() - t0
        steps = sum(ep.num_steps for b in batches for ep in [*b.pre, b.post])
        if it:
            parts = {k: v / wall for k, v in TIMED.items()}
            parts["other"] = 1.0 - sum(parts.values())
            rows.append({"wall_s": wall, "env_steps": steps, "steps_per_s": steps / wall, "fractions": parts})
    fr = {k: float(np.median([r["fractions"][k] for r in rows])) for k in rows[0]["fractions"]}
    return {"env": env_name, "model": "ssm", "meta_batch_size": meta_batch, "episodes_per_task": episodes,
            "iterations": rows, "median_fractions": fr,
            "steps_per_s_median": float(np.median([r["steps_per_s"] for r in rows]))}


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import torch

    torch.set_num_threads(1)
    _instrument()
    meta_batch, episodes, iterations = (2, 2, 1) if args.smoke else (10, 10, 3)
    results = []
    for env_name in ["navigation-2d"] if args.smoke else ["halfcheetah-vel", "navigation-2d"]:
        raw = raw_env_rate(env_name, 200 if args.smoke else 5_000)
        row = measure(env_name, iterations, meta_batch, episodes)
        row["raw_env_steps_per_s"] = raw
        row["sampling_vs_raw_env"] = row["steps_per_s_median"] / raw
        results.append(row)
        print({k: v for k, v in row.items() if k != "iterations"}, file=sys.stderr)
    data = {"setup": {"threads": 1, "what": "RolloutWorker.sample_tasks (pre-adaptation rollouts, inner update, "
                      "post-adaptation rollouts), components timed by wrappers; fractions of wall time"},
            "results": results}
    write("inference_share", args, "python benchmarks/inference_share.py", data)
    return data


if __name__ == "__main__":
    main()
