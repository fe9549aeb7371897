"""Env steps/s of MetaMAML sampling on ``halfcheetah-vel`` with the SSM policy: in-process, 1 and 2 Ray
rollout workers, against the raw single-process env-step rate (random actions, no policy) measured in
the same run.

    python benchmarks/sampling_throughput.py            # -> benchmarks/results/sampling_throughput.json
    python benchmarks/sampling_throughput.py --smoke    # seconds; writes nothing

One "iteration" = ``RaySampler.sample_tasks`` over a meta-batch (pre-adaptation rollouts, the workers'
inner update, post-adaptation rollouts): the steps/s include policy inference, the inner update, result
transfer and buffer writes - everything the workers do per iteration.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, raw_env_rate, start_ray, write  # noqa: E402

from ssm_metarl_ray.config import ExperimentConfig, MetaConfig  # noqa: E402

ENV = "halfcheetah-vel"


_VERSION = iter(range(1 << 30))  # weight versions must increase on every call


def one_iteration(sampler, state, rng) -> tuple[int, float]:
    """(env steps, seconds) of one ``sample_tasks`` call over a random meta-batch."""
    cfg = state.cfg
    tasks = [state.train_tasks[i] for i in rng.choice(len(state.train_tasks), cfg.meta.meta_batch_size)]
    sampler.set_weights(state.learner.get_weights(), next(_VERSION))
    t0 = time.perf_counter()
    batches = sampler.sample_tasks(tasks)
    return sum(ep.num_steps for b in batches for ep in [*b.pre, b.post]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--meta-batch", type=int, default=4,
                   help="tasks per sample_tasks call (default 4, the committed runs; `ssm-metarl train`: 10)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up round)")
    args = p.parse_args(argv)
    import ray
    import torch

    from ssm_metarl_ray.runtime.buffer import create_buffer
    from ssm_metarl_ray.runtime.config import RuntimeConfig
    from ssm_metarl_ray.runtime.workers import RaySampler
    from ssm_metarl_ray.training.meta_train import LocalSampler, build_state

    torch.set_num_threads(1)  # like a 1-CPU worker actor
    meta = replace(MetaConfig(), meta_batch_size=2 if args.smoke else args.meta_batch,
                   episodes_per_task=1 if args.smoke else 10)
    cfg = ExperimentConfig(env=ENV, meta=meta)  # default SSM policy (hidden 64, 2 layers, 32 modes)
    rounds = 1 if args.smoke else args.rounds
    raw_steps = 400 if args.smoke else 5_000
    state = build_state(cfg)
    owns = start_ray(args)
    spec = state.spec
    buffer = create_buffer(100_000, spec.obs_dim, spec.act_dim, False, "bench-sampling", snapshot_dir=None)
    # 1 + 2 workers of 0.5 logical CPU each, so both pools exist at once on a 2-CPU machine (only one pool
    # samples at a time; each worker process still runs torch with 1 thread)
    rt = RuntimeConfig(cpus_per_worker=0.5)
    samplers = {"in_process": LocalSampler(cfg, cfg.seed),
                "ray_1_worker": RaySampler(cfg, rt, 1, "bench-sampling-1", buffer.name),
                "ray_2_workers": RaySampler(cfg, rt, 2, "bench-sampling-2", buffer.name)}
    rng = np.random.default_rng(1)
    per_round: dict[str, list[float]] = {"raw_env": [], **{k: [] for k in samplers}}
    seconds: dict[str, list[float]] = {k: [] for k in samplers}
    try:
        for r in range(rounds + 1):  # round 0 warms up; configurations interleave, so load drift hits all
            raw = raw_env_rate(ENV, raw_steps)
            for name, sampler in samplers.items():
                steps, dt = one_iteration(sampler, state, rng)
                if r:
                    per_round[name].append(steps / dt)
                    seconds[name].append(dt)
            if r:
                per_round["raw_env"].append(raw)
    finally:
        for name, sampler in samplers.items():
            if name != "in_process":
                sampler.stop()
        buffer.close()
        if owns:
            ray.shutdown()
    med = {k: float(np.median(v)) for k, v in per_round.items()}
    rows = {k: {"steps_per_s_median": med[k], "steps_per_s_per_round": v,
                **({"s_per_iteration_median": float(np.median(seconds[k]))} if k in seconds else {})}
            for k, v in per_round.items()}
    ratios = {
        "in_process_vs_raw_env": med["in_process"] / med["raw_env"],
        "ray_1_worker_vs_raw_env": med["ray_1_worker"] / med["raw_env"],
        "ray_2_workers_vs_raw_env": med["ray_2_workers"] / med["raw_env"],
        "ray_1_worker_vs_in_process": med["ray_1_worker"] / med["in_process"],
        "ray_2_workers_vs_1_worker": med["ray_2_workers"] / med["ray_1_worker"],
    }
    setup = {"env": ENV, "model": "ssm (hidden 64, 2 layers, 32 modes)",
             "meta_batch_size": meta.meta_batch_size,
             "episodes_per_task": meta.episodes_per_task, "inner_steps": meta.inner_steps, "horizon": 200,
             "rounds": rounds, "raw_env_steps_per_round": raw_steps, "torch_threads_per_process": 1,
             "note": "one round = raw env, then one sample_tasks call per configuration; "
                     "steps/s = (pre + post "
                     "episodes) x real steps / wall time of sample_tasks (inference, inner update, transfer, "
                     "buffer writes); medians over rounds"}
    # paired per round (adjacent in time): robust to this VM's speed drifting between rounds
    pr = {k: np.asarray(v) for k, v in per_round.items()}
    paired = {"in_process_vs_raw_env": pr["in_process"] / pr["raw_env"],
              "ray_1_worker_vs_raw_env": pr["ray_1_worker"] / pr["raw_env"],
              "ray_2_workers_vs_1_worker": pr["ray_2_workers"] / pr["ray_1_worker"]}
    data = {"setup": setup, "results": rows, "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "ratios_paired_per_round": {k: {"median": round(float(np.median(v)), 3),
                                            "per_round": [round(float(x), 3) for x in v]}
                                        for k, v in paired.items()}}
    write("sampling_throughput", args, "python benchmarks/sampling_throughput.py", data)
    return data


if __name__ == "__main__":
    main()
