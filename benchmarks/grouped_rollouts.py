"""Post-adaptation rollouts of a meta-batch: all tasks' adapted policies stepped together (one policy call
per env step, ``RolloutWorker.sample_adapted`` / ``GroupedPolicy``) against one task at a time (one
rollout per task, as before), in the same run, interleaved; with the raw env-step rate for scale.

    python benchmarks/grouped_rollouts.py            # -> benchmarks/results/grouped_rollouts.json
    python benchmarks/grouped_rollouts.py --smoke    # seconds; writes nothing

Every task gets its own parameter set (the meta-parameters plus a small perturbation, standing in for an
inner step), ``episodes`` rows per task, one torch / BLAS thread.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, raw_env_rate, write  # noqa: E402


def measure(env_name: str, kind: str, tasks_n: int, episodes: int, reps: int) -> dict:
    import torch

    from ssm_metarl_ray.config import MetaConfig, ModelConfig
    from ssm_metarl_ray.envs import make_env, task_splits
    from ssm_metarl_ray.rollout.worker import RolloutWorker

    torch.manual_seed(0)
    worker = RolloutWorker(env_name, ModelConfig(kind=kind), MetaConfig(), tasks_n * episodes, seed=0)
    tasks = task_splits(make_env(env_name), tasks_n, 1, 0)[0]
    params = [{n: p.detach() + 0.01 * torch.randn_like(p) for n, p in worker.policy.named_parameters()}
              for _ in tasks]
    rates: dict[str, list[float]] = {"one_task_at_a_time": [], "grouped": []}  # env steps/s per repetition
    for rep in range(reps + 1):  # the first repetition warms up
        t0 = time.perf_counter()
        loop = [worker.sample(t, episodes, p) for t, p in zip(tasks, params)]
        t1 = time.perf_counter()
        grouped = worker.sample_adapted(tasks, episodes, params)
        t2 = time.perf_counter()
        if rep:  # navigation-2d episodes end at the goal: compare rates, not times
            rates["one_task_at_a_time"].append(sum(b.num_steps for b in loop) / (t1 - t0))
            rates["grouped"].append(sum(b.num_steps for b in grouped) / (t2 - t1))
    row = {"env": env_name, "model": kind, "tasks": tasks_n, "episodes_per_task": episodes}
    for name, r in rates.items():
        row[f"{name}_steps_per_s"] = max(r)
    row["speedup"] = row["grouped_steps_per_s"] / row["one_task_at_a_time_steps_per_s"]
    row["speedup_per_repetition"] = [g / o for g, o in zip(rates["grouped"], rates["one_task_at_a_time"])]
    return row


def main(argv: list[str] | None = None) -> dict:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    import torch

    torch.set_num_threads(1)
    tasks_n, episodes, reps = (2, 2, 1) if args.smoke else (5, 20, 3)
    envs = ["navigation-2d"] if args.smoke else ["navigation-2d", "halfcheetah-vel"]
    rows = []
    for env_name in envs:
        raw = raw_env_rate(env_name, 200 if args.smoke else 5_000)
        for kind in ("ssm", "mlp", "gru"):
            rows.append({**measure(env_name, kind, tasks_n, episodes, reps), "raw_env_steps_per_s": raw})
            r = rows[-1]
            r["grouped_vs_raw_env"] = r["grouped_steps_per_s"] / raw
            r["one_task_at_a_time_vs_raw_env"] = r["one_task_at_a_time_steps_per_s"] / raw
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, file=sys.stderr)
    data = {"setup": {"tasks": tasks_n, "episodes_per_task": episodes, "repetitions": reps, "threads": 1,
                      "what": "post-adaptation rollouts of a meta-batch, each task with its own parameters"},
            "results": rows}
    write("grouped_rollouts", args, "python benchmarks/grouped_rollouts.py", data)
    return data


if __name__ == "__main__":
    main()
