"""Diagnostic: how far vanilla policy-gradient adaptation steps move a randomly initialised policy on
halfcheetah-dir (MAML 2017's "random" reference: -35.7 -> +21.8 after one step of size 0.1 with 20
trajectories of 200 steps, i.e. +57.5).

For each policy variant and both directions (+1, -1), from a random init: sample ``episodes``
trajectories, take one PG step (the adapters' loss: importance-weighted PG on normalised GAE advantages,
linear baseline, step 0.1 halved after the first as in MAML's test protocol), repeat. Records per step
the mean return, its velocity term (return + control cost), the gradient norm and how far the step moved
the action distribution (RMS mean-action change in std units, KL), averaged over the two directions.

Variants: the library's default policy (actor head orthogonal gain 1, tanh 64x64 MLP; SSM), the old
head init (gain 0.01), a MAML-like ReLU 100x100 MLP, the same on the observation alone (MAML's policy
input; the others also see the previous action, reward and done flag), and that with rllab's layer
initialisation (Xavier-uniform weights, zero biases: MAML's policy as built; ``--variants relu100-rllab``).

MAML's "random" curve was not made with step 0.1: its test script (``maml_examples/
test_maml_cheetah_direc.py``) lists step size 1.0 for the random initialisation (0.1 for MAML, 0.2 for
the pretrained policy) and finally sets 0.5 for it (its later steps at half the first; here halved at
every step). ``--lr``, ``--env`` (e.g. ``halfcheetah-dir-rllab``, MAML's own simulator settings) and
``--seeds`` (random inits per variant and direction) probe those.

  python benchmarks/adaptation_step_probe.py            # -> results/adaptation_step_probe.json
  python benchmarks/adaptation_step_probe.py --env halfcheetah-dir-rllab --lr 0.1 0.5 1.0 --seeds 5 \
      --variants relu100 --steps 1 --out benchmarks/results/adaptation_step_probe_rllab.json
  python benchmarks/adaptation_step_probe.py --smoke    # seconds, nothing written
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

VARIANTS = {  # name -> ModelConfig overrides
    "mlp tanh64 (default)": {"kind": "mlp"},
    "mlp tanh64 head gain 0.01 (v1)": {"kind": "mlp", "head_init_gain": 0.01},
    "mlp relu100 (MAML-like)": {"kind": "mlp", "activation": "relu", "hidden_size": 100},
    "ssm (default)": {"kind": "ssm"},
    "mlp relu100 observation only": {"kind": "mlp", "activation": "relu", "hidden_size": 100,
                                     "observation_only": True},
    "mlp relu100 observation only, rllab init (MAML's policy)": {
        "kind": "mlp", "activation": "relu", "hidden_size": 100, "observation_only": True, "mlp_init": "xavier"},
}
SHORT = {"tanh64": "mlp tanh64 (default)", "gain0.01": "mlp tanh64 head gain 0.01 (v1)",
         "relu100": "mlp relu100 (MAML-like)", "ssm": "ssm (default)",
         "relu100-obs": "mlp relu100 observation only",
         "relu100-rllab": "mlp relu100 observation only, rllab init (MAML's policy)"}  # --variants names


def probe(variant: dict, direction: float, lr: float, steps: int, episodes: int, seed: int = 0,
          env: str = "halfcheetah-dir") -> list[dict]:
    import torch

    from ssm_metarl_ray.algorithms.maml import adapt, inner_loss, inner_step_health, policy_params
    from ssm_metarl_ray.config import MetaConfig, ModelConfig
    from ssm_metarl_ray.envs.base import Task
    from ssm_metarl_ray.envs.half_cheetah import CTRL_COST
    from ssm_metarl_ray.rollout.worker import RolloutWorker

    torch.manual_seed(seed)
    w = RolloutWorker(env, ModelConfig(**variant), MetaConfig(), episodes, seed)
    task = Task(env, 0, {"direction": direction})
    params = {k: v.detach().clone() for k, v in policy_params(w.policy).items()}
    rows = []
    for s in range(steps + 1):
        b = w.sample(task, episodes, params)
        ctrl = CTRL_COST * (np.clip(b.actions, -1, 1) ** 2).sum(-1) * b.mask  # (K, T)
        row = {"step": s, "return_mean": float(b.episode_returns.mean()),
               "velocity_term": float((b.rewards + ctrl).sum(1).mean())}
        if s < steps:
            step_lr = lr * 0.5 ** s
            p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            ep = b.to_torch()
            g = torch.autograd.grad(inner_loss(w.policy, p, ep), list(p.values()), allow_unused=True)
            row["grad_norm"] = float(torch.sqrt(sum((x ** 2).sum() for x in g if x is not None)))
            new = {k: v.detach() for k, v in adapt(w.policy, p, [ep], step_lr, create_graph=False).items()}
            h = inner_step_health(w.policy, params, new, ep, step_lr)
            row.update(action_change_std=h["action_change"], kl=h["kl"])
            params = new
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    import torch

    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--env", default="halfcheetah-dir", choices=["halfcheetah-dir", "halfcheetah-dir-rllab"])
    p.add_argument("--lr", type=float, nargs="+", default=[0.1],
                   help="first step size(s) (later steps: halved each step); one result per value and variant")
    p.add_argument("--seeds", type=int, default=1, help="random initialisations per variant and direction")
    p.add_argument("--steps", type=int, default=3, help="adaptation steps")
    p.add_argument("--variants", nargs="+", choices=list(SHORT), default=list(SHORT))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    steps, episodes = (1, 2) if a.smoke else (a.steps, 20)
    variants = {SHORT[n]: VARIANTS[SHORT[n]] for n in a.variants[:1 if a.smoke else None]}
    t0 = time.perf_counter()
    results = []
    for name, v, lr in [(n, v, lr) for n, v in variants.items() for lr in a.lr]:
        per_seed = []
        for seed in range(a.seeds):
            per_dir = [probe(v, d, lr, steps, episodes, seed, a.env) for d in (1.0, -1.0)]
            avg = [{k: float(np.mean([rows[s][k] for rows in per_dir])) for k in per_dir[0][s]}
                   for s in range(steps + 1)]
            per_seed.append({"seed": seed, "one_step_gain": round(avg[1]["return_mean"] - avg[0]["return_mean"], 2),
                             "steps_mean_over_directions": avg, "per_direction": {"+1": per_dir[0], "-1": per_dir[1]}})
        avg = [{k: float(np.mean([r["steps_mean_over_directions"][s][k] for r in per_seed]))
                for k in per_seed[0]["steps_mean_over_directions"][s]} for s in range(steps + 1)]
        gains = [r["one_step_gain"] for r in per_seed]
        gain = float(np.mean(gains))
        results.append({"variant": name, "model_config": v, "lr": lr, "episodes_per_step": episodes,
                        "one_step_gain": round(gain, 2), "one_step_gain_per_seed": gains,
                        "one_step_gain_sem": round(float(np.std(gains, ddof=1) / np.sqrt(len(gains))), 2)
                        if len(gains) > 1 else None,
                        "steps_mean_over_directions": avg,
                        **({"per_direction": per_seed[0]["per_direction"]} if a.seeds == 1
                           else {"per_seed": per_seed})})
        print(f"{name:<32} lr {lr}: return " + " ".join(f"{x['return_mean']:7.1f}" for x in avg)
              + f" | 1-step gain {gain:+.1f} (per seed {gains}) | step moves the mean action by "
              + " ".join(f"{x['action_change_std']:.3f}" for x in avg[:-1]) + " std", file=sys.stderr)
    command = " ".join(["python benchmarks/adaptation_step_probe.py", *(sys.argv[1:] if argv is None else argv)])
    data = {"task": f"{a.env}, directions +1 and -1 averaged", "env": a.env, "seeds": a.seeds,
            "seconds": round(time.perf_counter() - t0, 1),
            "maml2017_random_init_reference": {
                "lr": "1.0 or 0.5 (test_maml_cheetah_direc.py lists 1.0, then sets 0.5)",
                "returns_0_1_2_3": [-35.7, 21.8, 62.3, 86.2], "one_step_gain": 57.5},
            "results": results}
    _common.write("adaptation_step_probe", a, command, data)
    return data


if __name__ == "__main__":
    main()
