"""Shared bits of the benchmark scripts: flags, machine description, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
_START_LOAD = os.getloadavg()  # the machine may be shared: results record how busy it was


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs (seconds)")
    p.add_argument("--out", default=None, help="result file (default: benchmarks/results/<name>.json; "
                   "--smoke writes nothing unless given)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    return p


def machine() -> dict:
    import numpy
    import ray
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "ray": ray.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "load_average_1_5_15min_at_start": [round(x, 2) for x in _START_LOAD],
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write(name: str, args: argparse.Namespace, command: str, data: dict) -> Path | None:
    path = Path(args.out) if args.out else (None if args.smoke else RESULTS / f"{name}.json")
    doc = {"benchmark": name, "command": command, "smoke": args.smoke, "machine": machine(), **data}
    print(json.dumps(doc, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return path


def raw_env_rate(env_name: str, steps: int) -> float:
    """Env steps/s with random actions and no policy (one env of the family's first training task, this
    process): the ceiling for one core."""
    import numpy as np

    from ssm_metarl_ray.envs import make_env, task_splits

    env = make_env(env_name)
    env.set_task(task_splits(env, 2, 1, 0)[0][0])
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    lo, hi = env.action_space.low, env.action_space.high
    t0 = time.perf_counter()
    for _ in range(steps):
        if any(env.step(rng.uniform(lo, hi).astype(np.float32))[2:4]):
            env.reset()
    return steps / (time.perf_counter() - t0)


def start_ray(args: argparse.Namespace) -> bool:
    from ssm_metarl_ray.runtime.cluster import init_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster; see README "Running on Ray"
    return init_ray(num_cpus=args.num_cpus, object_store_memory=512 * 1024**2)
