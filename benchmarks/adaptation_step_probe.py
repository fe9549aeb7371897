"""Diagnostic: how far one vanilla policy-gradient adaptation step moves a policy on halfcheetah-dir.

MAML 2017 reports that a *randomly initialised* MLP fine-tuned with vanilla PG (step 0.1, 20 x 200-step
trajectories per step) goes from -35.7 to +21.8 in one step on HalfCheetahDir. This probe takes our
randomly initialised policies, one task (direction +1), and repeats: sample ``episodes`` trajectories,
take one PG step (the adapters' loss: importance-weighted PG on normalised GAE advantages, linear
baseline), with the actor head initialised as in the library (orthogonal, gain 0.01) and with gain 1.
It records the mean return, the velocity term and the gradient norm at each step.

  python benchmarks/adaptation_step_probe.py            # -> results/adaptation_step_probe.json
  python benchmarks/adaptation_step_probe.py --smoke    # seconds, nothing written
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def probe(model: str, gain: float, lr: float, steps: int, episodes: int, seed: int = 0) -> dict:
    import torch

    from ssm_metarl_ray.algorithms.maml import inner_loss, policy_params
    from ssm_metarl_ray.config import MetaConfig, ModelConfig
    from ssm_metarl_ray.envs.base import Task
    from ssm_metarl_ray.envs.half_cheetah import CTRL_COST
    from ssm_metarl_ray.rollout.worker import RolloutWorker

    torch.manual_seed(seed)
    w = RolloutWorker("halfcheetah-dir", ModelConfig(kind=model), MetaConfig(), episodes, seed)
    torch.nn.init.orthogonal_(w.policy.actor.weight, gain=gain)
    task = Task("halfcheetah-dir", 0, {"direction": 1.0})
    params = {k: v.detach().clone() for k, v in policy_params(w.policy).items()}
    rows = []
    for s in range(steps + 1):
        b = w.sample(task, episodes, params)
        ctrl = CTRL_COST * (np.clip(b.actions, -1, 1) ** 2).sum(-1) * b.mask  # (K, T)
        p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        g = torch.autograd.grad(inner_loss(w.policy, p, b.to_torch()), list(p.values()), allow_unused=True)
        norm = float(torch.sqrt(sum((x ** 2).sum() for x in g if x is not None)))
        rows.append({"step": s, "return_mean": float(b.episode_returns.mean()),
                     "return_sem": float(b.episode_returns.std(ddof=1) / np.sqrt(episodes)),
                     "velocity_term": float((b.rewards + ctrl).sum(1).mean()), "grad_norm": norm,
                     "param_change_norm": lr * norm})
        params = {k: (v - lr * gi if gi is not None else v).detach() for (k, v), gi in zip(p.items(), g)}
    return {"model": model, "actor_init_gain": gain, "lr": lr, "episodes_per_step": episodes, "steps": rows}


def main(argv: list[str] | None = None) -> dict:
    import torch

    a = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.set_num_threads(1)
    steps, episodes = (1, 2) if a.smoke else (5, 40)
    t0 = time.perf_counter()
    results = [probe(m, g, 0.1, steps, episodes) for m in ("mlp", "ssm") for g in (0.01, 1.0)]
    for r in results:
        print(f"{r['model']:>4} gain {r['actor_init_gain']:<5}: return "
              + " ".join(f"{x['return_mean']:7.1f}" for x in r["steps"])
              + " | grad norm " + " ".join(f"{x['grad_norm']:.3f}" for x in r["steps"]), file=sys.stderr)
    data = {"task": "halfcheetah-dir, direction +1", "seconds": round(time.perf_counter() - t0, 1),
            "maml2017_random_init_reference": {"lr": 0.1, "returns_0_1_2_3": [-35.7, 21.8, 62.3, 86.2]},
            "results": results}
    _common.write("adaptation_step_probe", a, "python benchmarks/adaptation_step_probe.py", data)
    return data


if __name__ == "__main__":
    main()
