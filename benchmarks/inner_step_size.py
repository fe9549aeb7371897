"""How far one inner policy-gradient step moves each model's action distribution at initialisation.

For every model (default config: actor head gain 1) on navigation-2d and halfcheetah-dir: sample 20
trajectories for each of 5 training tasks with the initial policy, take one inner step (the MAML inner
loss) at several step sizes, and record the RMS change of the mean action in units of the action std,
the KL(adapted || initial) and the inner-gradient norm by parameter group (mean over the tasks). The
per-model default step sizes (``DEFAULT_INNER_LR`` in ``ssm_metarl_ray/config.py``) cite this table.

  python benchmarks/inner_step_size.py            # -> results/inner_step_size.json
  python benchmarks/inner_step_size.py --smoke    # seconds, nothing written
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

LRS = (0.02, 0.1, 0.5)


def measure(env: str, kind: str, tasks: int, episodes: int, seed: int = 0) -> dict:
    import torch

    from ssm_metarl_ray.algorithms.maml import adapt, inner_step_health, policy_params
    from ssm_metarl_ray.config import MetaConfig, ModelConfig
    from ssm_metarl_ray.envs import make_env, task_splits
    from ssm_metarl_ray.rollout.worker import RolloutWorker

    torch.manual_seed(seed)
    w = RolloutWorker(env, ModelConfig(kind=kind), MetaConfig(), episodes, seed)
    train, _ = task_splits(make_env(env), max(tasks, 2), 1, seed)
    batches = [b.to_torch() for b in w.sample_many(train[:tasks], episodes)]
    params = policy_params(w.policy)
    out = {}
    for lr in LRS:
        hs = [inner_step_health(w.policy, params, {k: v.detach() for k, v in
                                                   adapt(w.policy, params, [b], lr, False).items()}, b, lr)
              for b in batches]
        out[str(lr)] = {k: round(float(np.mean([h[k] for h in hs])), 4) for k in hs[0]}
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from ssm_metarl_ray.config import MODELS

    a = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    tasks, episodes = (2, 2) if a.smoke else (5, 20)
    envs = ("navigation-2d",) if a.smoke else ("navigation-2d", "halfcheetah-dir")
    models = ("mlp", "ssm") if a.smoke else MODELS
    t0 = time.perf_counter()
    results = {env: {m: measure(env, m, tasks, episodes) for m in models} for env in envs}
    for env, per_model in results.items():
        for m, r in per_model.items():
            print(f"{env:<16} {m:<12} action change (std) at lr " + " ".join(
                f"{lr}: {r[str(lr)]['action_change']:.3f}" for lr in LRS)
                + f" | inner grad {r[str(LRS[0])]['inner_grad/total']:.3f}", file=sys.stderr)
    data = {"seconds": round(time.perf_counter() - t0, 1), "tasks": tasks, "episodes_per_task": episodes,
            "step_sizes": list(LRS), "results": results}
    _common.write("inner_step_size", a, "python benchmarks/inner_step_size.py", data)
    return data


if __name__ == "__main__":
    main()
