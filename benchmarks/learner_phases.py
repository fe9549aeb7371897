"""Where the learner's time goes: one task's second-order meta-gradient, phase by phase, against a forward
pass, and the whole meta-batch vectorised over tasks with ``torch.func.vmap`` against the per-task loop.

The README's main job (``ssm-metarl train`` defaults: navigation-2d, SSM, 10 tasks x 10 episodes) spends
more time in the learner than in sampling (``benchmarks/main_job.py``). This script takes one meta-batch of
that job's data (sampled in-process, seeded) and times, per task, with one thread and the phases
interleaved over repetitions (medians):

* ``forward``: the policy over the task's pre-adaptation episodes without autograd (the unit below);
* the clipped learner's meta-gradient as ``algorithms/maml.task_meta_gradient`` computes it, split into
  ``inner_forward`` (policy + inner loss at theta), ``inner_backward`` (its gradient with
  ``create_graph=True``: the inner step), ``outer_forward`` (the adapted policy on the post-adaptation
  episodes + clipped surrogate) and ``outer_backward`` (the meta-gradient: back through the outer forward,
  the inner step's backward and the inner forward);
* ``task_meta_gradient`` itself (second order) and with ``first_order=True``.

``vmap``: the same meta-gradient for all tasks at once: ``torch.func.grad`` of the mean over tasks of
``torch.func.vmap`` over (pre, post) of the task loss, the inner step by ``torch.func.grad`` (the batched
form the issue asked for), checked against the sum of the loop's per-task gradients (the loop is the one
checked against finite differences in ``tests/test_maml.py``). ``layer_norm_vmap_relative_error``: a
minimal case of the mismatch found that way (see :func:`layer_norm_vmap_check`).

    python benchmarks/learner_phases.py          # -> benchmarks/results/learner_phases.json
    python benchmarks/learner_phases.py --smoke  # tiny sizes; writes nothing
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write  # noqa: E402

PHASES = ("forward", "inner_forward", "inner_backward", "outer_forward", "outer_backward")


def config(smoke: bool):
    from ssm_metarl_ray.config import ExperimentConfig, MetaConfig, ModelConfig

    if not smoke:
        return ExperimentConfig()  # the main job's defaults
    return ExperimentConfig(model=ModelConfig(hidden_size=8, state_size=4, num_layers=1),
                            meta=MetaConfig(meta_batch_size=2, episodes_per_task=2))


def sample_batches(cfg):
    from ssm_metarl_ray.training.meta_train import LocalSampler, build_state

    state = build_state(cfg)
    sampler = LocalSampler(cfg, seed=cfg.seed)
    sampler.set_weights(state.learner.get_weights(), 0)
    return state.learner, sampler.sample_tasks(state.train_tasks[:cfg.meta.meta_batch_size])


def time_phases(learner, task) -> dict[str, float]:
    """One pass of every phase on ``task`` (a TorchTaskBatch) -> seconds per phase."""
    from ssm_metarl_ray.algorithms.losses import clipped_surrogate
    from ssm_metarl_ray.algorithms.maml import inner_loss, policy_params, run_policy, sgd_step
    from ssm_metarl_ray.models.policy import log_prob

    pol, cfg = learner.policy, learner.cfg
    params = policy_params(pol)
    pre, post = task.pre[0], task.post
    t0 = time.perf_counter()
    with torch.no_grad():
        run_policy(pol, params, pre)
    t1 = time.perf_counter()
    loss = inner_loss(pol, params, pre)
    t2 = time.perf_counter()
    adapted = sgd_step(params, loss, cfg.inner_lr, create_graph=True)
    t3 = time.perf_counter()
    out = run_policy(pol, adapted, post)
    surr = clipped_surrogate(log_prob(out.dist_params, post.actions, pol.discrete), post.logp, post.advantages,
                             post.mask, cfg.clip_eps)
    t4 = time.perf_counter()
    torch.autograd.grad(surr, list(params.values()), allow_unused=True)
    t5 = time.perf_counter()
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)))


def task_fields(ep) -> dict[str, torch.Tensor]:
    return {f.name: getattr(ep, f.name) for f in dataclasses.fields(ep) if getattr(ep, f.name) is not None}


def vmap_meta_gradient(learner, tasks) -> dict[str, torch.Tensor]:
    """grad of mean_i L_clip(theta - lr grad L_pg(theta; pre_i); post_i), vectorised over tasks i."""
    from torch.func import grad, vmap

    from ssm_metarl_ray.algorithms.losses import clipped_surrogate
    from ssm_metarl_ray.algorithms.maml import inner_loss, policy_params, run_policy
    from ssm_metarl_ray.models.policy import log_prob
    from ssm_metarl_ray.types import TorchEpisodes

    pol, cfg = learner.policy, learner.cfg

    def stacked(eps) -> dict[str, torch.Tensor]:  # the tasks' episodes, one leading task axis per field
        return {k: torch.stack([task_fields(e)[k] for e in eps]) for k in task_fields(eps[0])}

    pre_all, post_all = stacked([t.pre[0] for t in tasks]), stacked([t.post for t in tasks])

    def task_loss(params, pre_f, post_f):
        pre, post = TorchEpisodes(**pre_f), TorchEpisodes(**post_f)
        g = grad(lambda p: inner_loss(pol, p, pre))(params)
        adapted = {k: params[k] - cfg.inner_lr * g[k] for k in params}
        out = run_policy(pol, adapted, post)
        return clipped_surrogate(log_prob(out.dist_params, post.actions, pol.discrete), post.logp,
                                 post.advantages, post.mask, cfg.clip_eps)

    def meta(params):
        return vmap(task_loss, in_dims=(None, 0, 0))(params, pre_all, post_all).mean()

    params = {k: v.detach() for k, v in policy_params(pol).items()}
    return grad(meta)(params)


def layer_norm_vmap_check() -> dict[str, float]:
    """Why ``vmap`` gets the SSM's meta-gradient wrong, in isolation (float64): the same second-order
    meta-gradient as above (per-task inner step, mean over tasks) of ``LayerNorm(x W)`` with per-task
    adapted affine parameters, vectorised with ``vmap`` against a loop over tasks: relative error of the
    gradient with respect to W, using ``torch.layer_norm(z, ..., weight, bias)`` and the same function with
    the affine part written out (``layer_norm(z) * weight + bias``)."""
    from torch.func import grad, vmap

    gen = torch.Generator().manual_seed(0)
    n, b, d = 2, 3, 4
    x, w = (torch.randn(n, b, d, generator=gen, dtype=torch.float64) for _ in range(2))
    p0 = {"W": torch.randn(d, d, generator=gen, dtype=torch.float64), "g": torch.rand(d, dtype=torch.float64) + 0.5,
          "b": torch.randn(d, generator=gen, dtype=torch.float64)}

    def rel_error(norm) -> float:
        def loss(p, xi, wi):
            y = norm(xi @ p["W"], p["g"], p["b"])
            return (y * wi).sum() + 0.1 * (y ** 2).sum()

        def task(p, xi, wi):
            g = grad(lambda q: loss(q, xi, wi))(p)
            return loss({k: p[k] - 0.05 * g[k] for k in p}, xi, wi)

        batched = grad(lambda p: vmap(task, in_dims=(None, 0, 0))(p, x, w).sum())(p0)["W"]
        looped = sum(grad(task)(p0, x[i], w[i])["W"] for i in range(n))
        return float((batched - looped).abs().max() / looped.abs().max())

    return {"torch.layer_norm(z, weight, bias)": rel_error(lambda z, g, b: torch.layer_norm(z, (d,), g, b)),
            "torch.layer_norm(z) * weight + bias": rel_error(lambda z, g, b: torch.layer_norm(z, (d,)) * g + b)}


def loop_meta_gradient(learner, tasks) -> list[torch.Tensor | None]:
    from ssm_metarl_ray.algorithms.maml import policy_params, task_meta_gradient

    params = policy_params(learner.policy)
    total: list[torch.Tensor | None] = [None] * len(params)
    for t in tasks:
        g = task_meta_gradient(learner.policy, params, t, learner.cfg, len(tasks), with_health=False)
        total = [a if b is None else (b if a is None else a + b) for a, b in zip(total, g.grads)]
    return total


def main(argv: list[str] | None = None) -> dict:
    import warnings
    from dataclasses import replace

    from ssm_metarl_ray.algorithms.maml import TorchTaskBatch, policy_params, task_meta_gradient

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    reps = 2 if args.smoke else 5
    torch.set_num_threads(1)
    cfg = config(args.smoke)
    learner, batches = sample_batches(cfg)
    tasks = [TorchTaskBatch(b) for b in batches]
    params = policy_params(learner.policy)
    fo_cfg = replace(learner.cfg, first_order=True)
    per_task: dict[str, list[float]] = {k: [] for k in (*PHASES, "task_meta_gradient", "first_order")}
    whole: dict[str, list[float]] = {"loop": [], "vmap": []}
    time_phases(learner, tasks[0])  # warm-up
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # functorch's "no batching rule" performance warnings
        vgrads = vmap_meta_gradient(learner, tasks)
    for _ in range(reps):
        for t in tasks:
            for k, v in time_phases(learner, t).items():
                per_task[k].append(v)
            for key, c in (("task_meta_gradient", learner.cfg), ("first_order", fo_cfg)):
                t0 = time.perf_counter()
                task_meta_gradient(learner.policy, params, t, c, len(tasks), with_health=False)
                per_task[key].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lgrads = loop_meta_gradient(learner, tasks)
        whole["loop"].append(time.perf_counter() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            vgrads = vmap_meta_gradient(learner, tasks)
            whole["vmap"].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1e3 for k, v in per_task.items()}
    diff = max(float((vgrads[n] - g).abs().max()) for n, g in zip(params, lgrads) if g is not None)
    scale = max(float(g.abs().max()) for g in lgrads if g is not None)
    sec = {k: statistics.median(v) for k, v in whole.items()}
    data = {"setup": {"env": cfg.env, "model": cfg.model.kind, "hidden_size": cfg.model.hidden_size,
                      "num_layers": cfg.model.num_layers, "state_size": cfg.model.state_size,
                      "tasks": len(tasks), "episodes_per_task": cfg.meta.episodes_per_task,
                      "episode_steps": int(tasks[0].post.mask.shape[1]), "inner_lr": learner.cfg.inner_lr,
                      "threads": 1, "repetitions": reps,
                      "note": "per task: medians over repetitions x tasks; phases of one task's second-order "
                              "meta-gradient; forward = the policy over the pre-adaptation episodes, no autograd"},
            "per_task_ms": {k: round(v, 3) for k, v in ms.items()},
            "forward_equivalents": {k: round(v / ms["forward"], 2) for k, v in ms.items()},
            "meta_batch_s": {k: round(v, 4) for k, v in sec.items()},
            "vmap_over_loop": round(sec["vmap"] / sec["loop"], 3),
            "vmap_max_abs_diff": diff, "gradient_max_abs": scale,
            "layer_norm_vmap_relative_error": layer_norm_vmap_check()}
    write("learner_phases", args, "python benchmarks/learner_phases.py" + (" --smoke" if args.smoke else ""), data)
    return data


if __name__ == "__main__":
    main()
