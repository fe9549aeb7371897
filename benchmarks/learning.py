"""Learning benchmark: MetaMAML held-out returns under the MAML 2017 meta-test protocol.

One run = meta-train one policy on one task family, then evaluate it on held-out test tasks exactly as
MAML 2017 did (40 test tasks, horizon 200, 20 fresh trajectories per adaptation step, vanilla PG steps
with the step size halved after the first, 0..3 steps), with standard and with hybrid adaptation.

Methods (MAML's figure-5 reference points):
  maml       MetaMAML meta-training (policy-gradient inner step, second-order meta-gradient)
  multitask  one policy trained on all training tasks jointly (``inner_steps=0``), same env-step budget,
             then adapted the same way ("pretrained" in MAML's figure)
  random     the randomly initialised policy, adapted the same way (no training)

  python benchmarks/learning.py run --env halfcheetah-dir --model ssm --seed 0
  python benchmarks/learning.py suite --jobs 2        # the committed plan, skipping finished runs
  python benchmarks/learning.py report                # tables, CSV and PNGs from the result files

Each run writes ``results/learning/<env>/<method>-<model>-s<seed>.json``: config, env steps and
wall-clock of training and evaluation, the per-iteration training history (the learning curve:
post-adaptation return on that iteration's training tasks), and per-task held-out returns per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402

OUT_ROOT = _common.RESULTS / "learning"
METHODS = ("maml", "multitask", "random", "in-context", "in-context-maml")
# step size of the inner/adaptation PG step per model (the MAML 2017 mlp setting uses 0.1; the recurrent
# policies' gradients are larger and 0.02 keeps their adapted returns stable, as in the default config)
LR = {"mlp": 0.1, "ssm": 0.02, "gru": 0.02, "lstm": 0.02, "transformer": 0.02}


def pick(given, default):
    """A flag's value if given (not None), else ``default`` (the preset's or the config's)."""
    return default if given is None else given


def build_config(a: argparse.Namespace):
    from dataclasses import replace

    from ssm_metarl_ray.config import ExperimentConfig, ModelConfig
    from ssm_metarl_ray.presets import apply_preset

    in_context = a.method == "in-context"  # recurrent PPO over trials (algorithms/ppo.py)
    model = ModelConfig(kind=a.model, activation=a.activation, hidden_size=a.hidden_size or 64,
                        num_layers=a.num_layers or 2, state_size=a.state_size or 32,
                        ssm_r_min=a.ssm_r_min, ssm_input_hidden=a.ssm_input_hidden,
                        head_init_gain=a.head_init_gain,
                        observation_only=a.observation_only, critic_detached=not a.shared_critic,
                        head_hidden=a.head_hidden, head_obs=a.head_obs, history_only=a.history_only,
                        history_gate=a.history_gate, mlp_init=a.mlp_init)
    cfg = ExperimentConfig(env=a.env, num_threads=1, seed=a.seed, model=model)
    if a.preset:  # the published protocol; explicit flags below still override it
        cfg = apply_preset(cfg, a.preset, per_model=False)  # those came in as flags (parse_args)
    lr = a.lr if a.lr is not None else (cfg.meta.inner_lr if a.preset else LR[a.model])
    iters = a.iterations if a.iterations is not None else (cfg.iterations if a.preset else 40)
    meta_batch = a.meta_batch or (cfg.meta.meta_batch_size if a.preset else 10)
    episodes = a.episodes or (cfg.meta.episodes_per_task if a.preset else (4 if in_context else 20))
    iterations = {"maml": iters, "multitask": 2 * iters, "random": 0, "in-context": iters,
                  "in-context-maml": iters}[a.method]
    return replace(
        cfg, iterations=iterations, num_train_tasks=a.train_tasks or cfg.num_train_tasks,
        num_test_tasks=a.test_tasks,
        # multitask collects one batch per task instead of two, so it gets twice the iterations: the
        # same env-step budget as maml
        meta=replace(cfg.meta, meta_batch_size=meta_batch, episodes_per_task=episodes, inner_lr=lr,
                     inner_steps=0 if a.method == "multitask" else pick(a.inner_steps, cfg.meta.inner_steps),
                     outer_steps=a.outer_steps, inner_lr_decay=pick(a.inner_lr_decay, cfg.meta.inner_lr_decay),
                     multi_step_loss=pick(a.multi_step_loss, cfg.meta.multi_step_loss),
                     warmup_iterations=a.warmup_iterations, warmup_tasks=a.warmup_tasks,
                     warmup_schedule=a.warmup_schedule, balanced_tasks=a.balanced_tasks,
                     outer_lr=a.outer_lr or (1e-3 if in_context else cfg.meta.outer_lr),
                     outer_optimizer=a.outer_optimizer or cfg.meta.outer_optimizer, baseline=a.baseline,
                     inner_params=a.inner_params, batch_unit=a.batch_unit or cfg.meta.batch_unit,
                     trpo_max_kl=a.max_kl or cfg.meta.trpo_max_kl,
                     trpo_exact_fisher=a.exact_fisher or cfg.meta.trpo_exact_fisher,
                     gae_lambda=pick(a.gae_lambda, 0.95 if in_context else cfg.meta.gae_lambda),
                     **(dict(method="in-context", episodes_per_trial=a.episodes_per_trial, value_coef=0.5,
                             normalize_rewards=a.normalize_rewards,
                             task_inference_coef=a.task_inference_coef,
                             ppo_minibatches=a.ppo_minibatches, recurrent_lr_scale=a.recurrent_lr_scale,
                             anneal_lr=a.anneal_lr)
                        if in_context else {}),
                     # MetaMAML on trials (the state carries across a trial's episodes)
                     **(dict(method="in-context-maml", episodes_per_trial=a.episodes_per_trial)
                        if a.method == "in-context-maml" else {})),
        adapt=replace(cfg.adapt, adapt_lr=lr, adapt_steps=a.adapt_steps, baseline=a.baseline,
                      adapt_params=a.inner_params,
                      batch_unit=a.test_batch_unit or a.batch_unit or cfg.adapt.batch_unit,
                      adapt_lr_decay=pick(a.adapt_lr_decay, cfg.adapt.adapt_lr_decay),
                      episodes_per_step=a.episodes or (cfg.adapt.episodes_per_step if a.preset else episodes)))


# flags of this script for the config fields that the in-context preset and maml2017's per-model settings set
# (ssm_metarl_ray/presets.py)
_PRESET_FLAGS = {"iterations": "--iterations", "num_test_tasks": "--test-tasks", "meta.method": "--method",
                 "meta.meta_batch_size": "--meta-batch", "meta.episodes_per_task": "--episodes",
                 "meta.episodes_per_trial": "--episodes-per-trial", "meta.ppo_minibatches": "--ppo-minibatches",
                 "meta.outer_lr": "--outer-lr", "meta.outer_steps": "--outer-steps",
                 "meta.task_inference_coef": "--task-inference-coef", "meta.normalize_rewards": "--normalize-rewards",
                 "meta.warmup_iterations": "--warmup-iterations", "meta.warmup_tasks": "--warmup-tasks",
                 "model.head_hidden": "--head-hidden", "model.head_obs": "--head-obs",
                 "model.history_only": "--history-only", "meta.inner_params": "--inner-params",
                 "meta.inner_lr": "--lr", "meta.inner_lr_decay": "--inner-lr-decay",
                 "meta.outer_optimizer": "--outer-optimizer", "meta.trpo_max_kl": "--max-kl",
                 "meta.trpo_exact_fisher": "--exact-fisher", "meta.gae_lambda": "--gae-lambda",
                 "model.activation": "--activation", "model.hidden_size": "--hidden-size",
                 "model.observation_only": "--observation-only", "model.mlp_init": "--mlp-init"}
# fields build_config sets already (the in-context settings; --lr and --inner-params set the test-time ones)
_IMPLIED = {"env", "meta.value_coef", "adapt.adapt_lr", "adapt.adapt_params"}


def _as_flags(fields: dict[str, object]) -> list[str]:
    """Dotted config fields as this script's flags (booleans as switches)."""
    flags: list[str] = []
    for field, value in fields.items():
        if field in _IMPLIED or value is False:
            continue
        flags += [_PRESET_FLAGS[field]] + ([] if value is True else [str(value)])
    return flags


def in_context_preset_flags(env: str) -> list[str]:
    """The ``in-context`` preset of ``env`` as this script's flags (the CLI's ``--preset in-context`` gives the
    same config, ``tests/test_presets.py``); exits with the allowed families for another ``env``."""
    from ssm_metarl_ray.presets import preset_overrides

    try:
        nested = preset_overrides("in-context", env)
    except ValueError as e:
        raise SystemExit(f"learning.py: {e}") from None
    fields = {(f"{sub}.{short}" if sub else short): v for sub, part in nested.items() for short, v in part.items()}
    return [*_as_flags(fields), "--modes", "in-context", "--tag", "preset"]


def checkpoint_path(a: argparse.Namespace) -> Path:
    return Path(a.checkpoint_dir) if a.checkpoint_dir else OUT_ROOT / a.env / "checkpoints" / run_name(
        a.method, a.model, a.seed, a.tag)


def run_one(a: argparse.Namespace) -> dict:
    from ssm_metarl_ray.training.checkpoint import (
        learner_tensors,
        restore_training_state,
        save_training_checkpoint,
    )
    from ssm_metarl_ray.training.evaluate import evaluate_modes
    from ssm_metarl_ray.training.meta_train import LocalSampler, build_state, meta_train
    from ssm_metarl_ray.training.outputs import health_line

    cfg = build_config(a)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    state = build_state(cfg)
    ckpt = checkpoint_path(a)
    wall_before = cpu_before = 0.0
    if a.resume and ckpt.is_dir():  # continue a run that was cut into pieces (replay buffer not kept)
        restore_training_state(state, ckpt)
        if state.history:
            wall_before = state.history[-1].get("time/train_wall_s", 0.0)
            cpu_before = state.history[-1].get("time/train_cpu_s", 0.0)
        print(f"resuming {ckpt} after iteration {state.iteration}", file=sys.stderr)

    def log(st, m):
        m["time/train_wall_s"] = wall_before + time.perf_counter() - t0
        m["time/train_cpu_s"] = cpu_before + time.process_time() - cpu0
        print(f"[{run_name(a.method, a.model, a.seed, a.tag)}] iter {m['iteration']}/{cfg.iterations} pre "
              f"{m['meta/pre_return']:.1f} post {m['meta/post_return']:.1f} | {health_line(m)} | steps "
              f"{m['env_steps']} | {m['time/sample_s']:.1f}s + {m['time/update_s']:.1f}s", file=sys.stderr, flush=True)
        if a.checkpoint_every and st.iteration % a.checkpoint_every == 0 and st.iteration < cfg.iterations:
            save_training_checkpoint(ckpt, st, None)  # small: config, weights, learner/optimizer, history
        if a.stop_after and time.perf_counter() - t0 > a.stop_after and st.iteration < cfg.iterations:
            save_training_checkpoint(ckpt, st, None)
            raise SystemExit(f"stopped after {a.stop_after:.0f} s at iteration {st.iteration}; continue with "
                             f"--resume (checkpoint {ckpt})")

    meta_train(state, LocalSampler(cfg, seed=cfg.seed), log)
    train_s = wall_before + time.perf_counter() - t0
    train_cpu = cpu_before + time.process_time() - cpu0
    t_eval = time.perf_counter()
    weights = learner_tensors(state)
    if not a.smoke and not a.out:  # final weights of result-file runs, for `evaluate` (runs/ is not committed)
        wdir = HERE.parent / "runs" / "learning" / a.env
        wdir.mkdir(parents=True, exist_ok=True)
        import torch

        torch.save(weights, wdir / f"{run_name(a.method, a.model, a.seed, a.tag)}.pt")
    buffer = state.buffer if len(state.buffer) else None
    results = evaluate_modes(cfg, weights, state.test_tasks, buffer, a.modes, state.learner.version,
                             progress=True)
    eval_s = time.perf_counter() - t_eval
    # every mode collects episodes_per_step trajectories before and after each step; pre is shared
    eval_steps = (len(state.test_tasks) * cfg.adapt.episodes_per_step * state.spec.horizon
                  * (1 + a.adapt_steps * len(a.modes)))
    keep = ("iteration", "env_steps", "meta/pre_return", "meta/post_return", "time/sample_s", "time/update_s",
            "time/train_wall_s", "time/train_cpu_s")
    return {
        "env": a.env, "method": a.method, "model": a.model, "variant": a.tag or "", "seed": a.seed,
        "config": cfg.to_dict(),
        "train_env_steps": state.env_steps, "train_wall_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu, 1), "eval_env_steps": eval_steps, "eval_wall_s": round(eval_s, 1),
        "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()
                     if k in keep or k.startswith(("health/", "grad/", "trpo/", "meta/kl", "meta/task_inference"))}
                    for m in state.history],
        "test_task_params": [t.params for t in state.test_tasks],  # row order of every per_task array
        "evaluation": {mode: {k: r[k] for k in ("mean", "sem", "per_task")} for mode, r in results.items()},
        "summary": {mode: [round(float(x), 2) for x in r["mean"]] for mode, r in results.items()},
    }


def run_name(method: str, model: str, seed: int, tag: str = "") -> str:
    return f"{method}-{model}{'-' + tag if tag else ''}-s{seed}"


def result_path(env: str, method: str, model: str, seed: int, tag: str = "") -> Path:
    return OUT_ROOT / env / f"{run_name(method, model, seed, tag)}.json"


def cmd_run(a: argparse.Namespace) -> dict:
    if a.smoke:
        a.iterations, a.meta_batch, a.episodes, a.test_tasks, a.adapt_steps = 1, 2, 2, 2, 1
    command = "python benchmarks/learning.py " + " ".join(sys.argv[1:])
    data = run_one(a)
    out = a.out or (None if a.smoke else str(result_path(a.env, a.method, a.model, a.seed, a.tag)))
    ns = argparse.Namespace(smoke=a.smoke, out=out)
    if out:
        _common.write(f"learning/{a.env}/{run_name(a.method, a.model, a.seed, a.tag)}", ns, command, data)
    return data


# The committed plan: what ``suite`` runs, as (env, method, model, seed, tag, extra flags); results of the
# learner before the MAML-parity fixes (HalfCheetah, 3.2e6 steps) are kept in results/learning_v1/. The
# navigation-2d rows up to "random" ran under the maml2017 preset as it stood before 2026-12-05 (one inner
# step, 100 iterations, test steps 0.5 / 0.125 / 0.031 of 40 episodes); each result file holds its whole
# config. The "preset" rows run today's (two inner steps, 80 iterations, test batches of 4,000 env steps).
NAV = ["--preset", "maml2017", "--modes", "standard"]
NAV_SSM = [*NAV, "--head-hidden", "64", "--inner-params", "heads", "--lr", "0.05", "--inner-lr-decay", "1.0",
           "--adapt-lr-decay", "1.0", "--head-obs", "--history-only", "--outer-lr", "0.006", "--outer-steps", "10"]
PLAN = [
    ("navigation-2d", "maml", "mlp", 0, "", NAV), ("navigation-2d", "maml", "mlp", 1, "", NAV),
    ("navigation-2d", "maml", "mlp", 2, "", NAV), ("navigation-2d", "multitask", "mlp", 0, "", NAV),
    ("navigation-2d", "maml", "ssm", 0, "", [*NAV, "--lr", "0.03"]),
    ("navigation-2d", "maml", "mlp", 0, "trpo", [*NAV, "--outer-optimizer", "trpo"]),
    ("navigation-2d", "maml", "mlp", 0, "relu100", [*NAV, "--activation", "relu", "--hidden-size", "100"]),
    ("navigation-2d", "maml", "mlp", 0, "obs", [*NAV, "--observation-only"]),
    ("navigation-2d", "maml", "mlp", 0, "inner2", [*NAV, "--inner-steps", "2", "--iterations", "66"]),
    ("navigation-2d", "maml", "mlp", 0, "lagged", [*NAV, "--baseline", "lagged"]),
    ("navigation-2d", "random", "mlp", 0, "", NAV),
    *[("navigation-2d", "maml", "mlp", seed, "preset-msl", NAV) for seed in range(3)],
    # the SSM (ANIL, MLP heads that read the observation, a core of the action/reward history, a faster
    # outer step: the preset's SSM settings since 2026-12-06; the "" SSM row above ran before them) with
    # every test step 0.05, re-evaluated with the preset's halving test steps by ``evaluate ...
    # --adapt-lr-decay 0.5 --out-tag decay0.5``; "ssm-recipe" is the preset alone (identical to seed 0's
    # decay0.5 evaluation)
    *[("navigation-2d", "maml", "ssm", seed, "msl-hh64-lr0.05-heads-nodecay-hist-olr0.006-os10", NAV_SSM)
      for seed in range(3)],
    ("navigation-2d", "maml", "ssm", 0, "ssm-recipe", NAV),
    ("halfcheetah-dir", "maml", "mlp", 0, "", ["--preset", "maml2017", "--modes", "standard",
                                               "--checkpoint-every", "1", "--resume"]),
]


def cmd_evaluate(a: argparse.Namespace) -> dict:
    """Re-run the held-out evaluation of a finished run from its final weights (``runs/learning/``, kept
    locally) with ``--episodes-per-step`` trajectories per step; the previous evaluation is kept in the
    result file under ``evaluation_previous``."""
    from dataclasses import replace

    import torch

    from ssm_metarl_ray.config import ExperimentConfig
    from ssm_metarl_ray.envs import make_env, task_splits
    from ssm_metarl_ray.training.evaluate import evaluate_modes

    name = run_name(a.method, a.model, a.seed, a.tag)
    data = json.loads(result_path(a.env, a.method, a.model, a.seed, a.tag).read_text())
    path = result_path(a.env, a.method, a.model, a.seed, "-".join(x for x in (a.tag, a.out_tag) if x))
    data["variant"] = " ".join(x for x in (data.get("variant", ""), a.out_tag) if x)
    cfg = ExperimentConfig.from_dict(data["config"])
    cfg = replace(cfg, meta=replace(cfg.meta, gae_lambda=pick(a.gae_lambda, cfg.meta.gae_lambda)),
                  adapt=replace(cfg.adapt, episodes_per_step=a.episodes_per_step, baseline=a.baseline,
                                adapt_lr=pick(a.adapt_lr, cfg.adapt.adapt_lr),
                                adapt_lr_decay=pick(a.adapt_lr_decay, cfg.adapt.adapt_lr_decay),
                                adapt_lr_schedule=a.adapt_lr_schedule or cfg.adapt.adapt_lr_schedule,
                                batch_unit=a.batch_unit or cfg.adapt.batch_unit)).validate()
    torch.set_num_threads(1)
    weights = torch.load(HERE.parent / "runs" / "learning" / a.env / f"{name}.pt", weights_only=True)
    _, test_tasks = task_splits(make_env(cfg.env), cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)
    t0 = time.perf_counter()
    results = evaluate_modes(cfg, weights, test_tasks, None, a.modes, progress=True)
    data.setdefault("evaluation_previous", {"evaluation": data["evaluation"], "summary": data["summary"],
                                            "eval_env_steps": data["eval_env_steps"]})
    horizon = make_env(cfg.env).horizon
    data.update(config=cfg.to_dict(), eval_wall_s=round(time.perf_counter() - t0, 1),
                eval_env_steps=(len(test_tasks) * a.episodes_per_step * horizon
                                * (1 + cfg.adapt.adapt_steps * len(a.modes))),
                evaluation={m: {k: r[k] for k in ("mean", "sem", "per_task")} for m, r in results.items()},
                summary={m: [round(float(x), 2) for x in r["mean"]] for m, r in results.items()},
                evaluation_command="python benchmarks/learning.py " + " ".join(sys.argv[1:]))
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"{name}: {data['summary']}", file=sys.stderr)
    return data


def cmd_suite(a: argparse.Namespace) -> None:
    todo = [p for p in PLAN if a.force or not result_path(p[0], p[1], p[2], p[3], p[4]).exists()]
    if a.only:
        todo = [p for p in todo if f"{p[0]}:{p[1]}:{p[2]}:{p[3]}" in a.only]
    logs = OUT_ROOT / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def launch(p):
        env, method, model, seed, tag, extra = p
        cmd = [sys.executable, str(HERE / "learning.py"), "run", "--env", env, "--method", method,
               "--model", model, "--seed", str(seed), *(["--tag", tag] if tag else []), *extra]
        with open(logs / f"{env}-{run_name(method, model, seed, tag)}.log", "w") as f:
            rc = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=f,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"{'done' if rc == 0 else f'FAILED (rc {rc})'}: {' '.join(cmd[2:])}", flush=True)

    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(launch, todo))


def build_parser() -> argparse.ArgumentParser:
    from ssm_metarl_ray.config import ADAPT_LR_SCHEDULES, BASELINES, BATCH_UNITS, MLP_INITS, MODELS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one meta-training + held-out evaluation run")
    r.add_argument("--env", default="halfcheetah-dir")
    r.add_argument("--method", choices=METHODS, default="maml")
    r.add_argument("--model", choices=MODELS, default="ssm")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--preset", choices=["maml2017", "in-context"], default=None,
                   help="maml2017: the published protocol of this family; in-context: our in-context "
                        "protocol (ssm_metarl_ray/presets.py; implies --method in-context --modes in-context "
                        "--tag preset). Flags given here override it")
    r.add_argument("--iterations", type=int, default=None,
                   help="meta-iterations (default 40, or the preset's; multitask: twice as many)")
    r.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-iteration (default 10)")
    r.add_argument("--episodes", type=int, default=None, help="trajectories per task per step (default 20)")
    r.add_argument("--train-tasks", type=int, default=None, help="training task set (default 100)")
    r.add_argument("--activation", choices=["tanh", "relu"], default="tanh", help="mlp hidden activation")
    r.add_argument("--hidden-size", type=int, default=None, help="core width (default 64)")
    r.add_argument("--num-layers", type=int, default=None, help="core layers (default 2)")
    r.add_argument("--state-size", type=int, default=None, help="SSM: complex modes per layer (default 32)")
    r.add_argument("--head-init-gain", type=float, default=1.0,
                   help="orthogonal-init gain of the actor's output layer (default 1; CleanRL's PPO: 0.01)")
    r.add_argument("--ssm-r-min", type=float, default=0.9,
                   help="SSM: smallest initial eigenvalue magnitude (default 0.9, the LRU's)")
    r.add_argument("--ssm-input-hidden", type=int, default=0,
                   help="SSM: width of a tanh layer before the input projection (default 0: linear)")
    r.add_argument("--head-hidden", type=int, default=0,
                   help="hidden width of MLP actor/critic heads (default 0: linear heads)")
    r.add_argument("--warmup-iterations", type=int, default=0,
                   help="task curriculum: the first N iterations train on the first --warmup-tasks tasks only")
    r.add_argument("--warmup-tasks", type=int, default=1, help="training tasks of the warm-up (default 1)")
    r.add_argument("--warmup-schedule", choices=("pool", "in-turn"), default="pool",
                   help="pool: warm-up iterations draw from the first --warmup-tasks tasks; in-turn: the "
                        "warm-up splits into --warmup-tasks phases, each on one distinct task in turn")
    r.add_argument("--task-inference-coef", type=float, default=0.0,
                   help="in-context: weight of the auxiliary loss predicting the task's parameters from the "
                        "core's output (belief supervision; 0: off)")
    r.add_argument("--normalize-rewards", action="store_true",
                   help="in-context: PPO divides rewards by the running std of the return (MuJoCo)")
    r.add_argument("--anneal-lr", action="store_true",
                   help="in-context: Adam step size decays linearly to 0 over the run (CleanRL's PPO)")
    r.add_argument("--recurrent-lr-scale", type=float, default=1.0,
                   help="in-context: Adam step of the SSM's recurrence parameters relative to --outer-lr")
    r.add_argument("--ppo-minibatches", type=int, default=4, help="in-context: minibatches per PPO epoch")
    r.add_argument("--head-obs", action="store_true",
                   help="the actor and critic heads read the observation beside the core's output")
    r.add_argument("--history-only", action="store_true",
                   help="the core sees the previous action, reward and done only (with --head-obs)")
    r.add_argument("--balanced-tasks", action="store_true",
                   help="every meta-batch holds each distinct training task equally often (halfcheetah-dir)")
    r.add_argument("--history-gate", action="store_true",
                   help="the heads read the core's output times a gate meta-learned per inner step (with --head-obs)")
    r.add_argument("--observation-only", action=argparse.BooleanOptionalAction, default=False,
                   help="the policy sees the observation only (MAML 2017), not previous action/reward/done")
    r.add_argument("--gae-lambda", type=float, default=None,
                   help="GAE lambda of every advantage (inner, outer and test-time steps; default: the preset's for "
                        "the model (maml2017 MLP on halfcheetah-dir-rllab 0.97), else 1.0 as MAML, in-context 0.95)")
    r.add_argument("--baseline", choices=BASELINES, default="fit",
                   help="advantages of inner and adaptation steps: baseline fitted on the same batch, or "
                        "rllab's lagged one (fitted on the task's previous batch, 0 for the first)")
    r.add_argument("--batch-unit", choices=BATCH_UNITS, default=None,
                   help="--episodes counts episodes, or env steps as rllab's batch_size (whole episodes until "
                        "--episodes x horizon steps; MAML 2017's samplers), in training and at test time; "
                        "default: the preset's, else episodes")
    r.add_argument("--test-batch-unit", choices=BATCH_UNITS, default=None,
                   help="what test-time steps' batches count (default: --batch-unit, else the preset's)")
    r.add_argument("--inner-params", choices=["all", "heads"], default="all",
                   help="what inner and test-time steps adapt: all parameters (MAML) or the heads only (ANIL)")
    r.add_argument("--inner-steps", type=int, default=None,
                   help="inner PG steps in meta-training (default: the preset's, else 1; MAML: 1)")
    r.add_argument("--inner-lr-decay", type=float, default=None,
                   help="inner step s uses --lr x decay^s in meta-training (default: the preset's, else 1)")
    r.add_argument("--multi-step-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="with --inner-steps > 1: outer loss after every inner step, not only the last "
                        "(default: the preset's, else off)")
    r.add_argument("--outer-optimizer", choices=["clipped", "trpo"], default=None)
    r.add_argument("--outer-lr", type=float, default=None)
    r.add_argument("--shared-critic", action="store_true",
                   help="the critic's value loss also trains the core (default: the critic reads detached features)")
    r.add_argument("--episodes-per-trial", type=int, default=2,
                   help="in-context: episodes per trial (the recurrent state carries across them)")
    r.add_argument("--max-kl", type=float, default=None, help="TRPO trust region (default 0.01; MAML's "
                   "HalfCheetahDir checkpoint: 0.02)")
    r.add_argument("--mlp-init", choices=MLP_INITS, default="torch",
                   help="MLP core's layers: torch's default init or rllab's (MAML 2017: Xavier-uniform, zero biases)")
    r.add_argument("--exact-fisher", action=argparse.BooleanOptionalAction, default=False,
                   help="TRPO: the KL's Hessian through the inner step, as MAML's rllab code (third order; "
                   "default: the adapted policies' Fisher with the inner step's Jacobian taken as the identity)")
    r.add_argument("--test-tasks", type=int, default=40, help="held-out test tasks (MAML: 40)")
    r.add_argument("--adapt-steps", type=int, default=3, help="adaptation steps (MAML: 0..3)")
    r.add_argument("--adapt-lr-decay", type=float, default=None,
                   help="test-time steps after the first are smaller by this factor (default: the preset's, "
                        "else the config's)")
    r.add_argument("--outer-steps", type=int, default=5,
                   help="clipped-surrogate steps per meta-iteration (ProMP uses 5)")
    r.add_argument("--lr", type=float, default=None, help="inner/adaptation step size (default per model)")
    r.add_argument("--modes", nargs="+", default=["standard", "hybrid"])
    r.add_argument("--tag", default="", help="variant name, part of the result file name and the tables")
    r.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a small resumable checkpoint every K iterations (no replay buffer)")
    r.add_argument("--checkpoint-dir", default=None,
                   help="default: results/learning/<env>/checkpoints/<method>-<model>-s<seed>")
    r.add_argument("--resume", action="store_true", help="continue from the checkpoint if there is one")
    r.add_argument("--stop-after", type=float, default=0.0,
                   help="seconds of training after which to checkpoint and exit (run the rest with --resume)")
    r.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written unless --out")
    r.add_argument("--out", default=None)
    s = sub.add_parser("suite", help="run the committed plan in parallel processes (skips finished runs)")
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--force", action="store_true", help="rerun finished runs")
    s.add_argument("--only", nargs="*", default=None, help="env:method:model:seed entries of the plan")
    e = sub.add_parser("evaluate", help="re-evaluate a finished run from its final weights")
    e.add_argument("--env", required=True)
    e.add_argument("--method", choices=METHODS, default="maml")
    e.add_argument("--model", choices=MODELS, required=True)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--tag", default="")
    e.add_argument("--episodes-per-step", type=int, required=True)
    e.add_argument("--modes", nargs="+", default=["standard"])
    e.add_argument("--baseline", choices=BASELINES, default="fit",
                   help="adaptation-step baseline: fitted on the step's batch, or rllab's lagged one")
    e.add_argument("--adapt-lr", type=float, default=None, help="adaptation step size (default: the run's)")
    e.add_argument("--gae-lambda", type=float, default=None,
                   help="GAE lambda of the adaptation steps' advantages (default: the run's)")
    e.add_argument("--adapt-lr-decay", type=float, default=None,
                   help="later steps are smaller by this factor (default: the run's; MAML 2017 halves them)")
    e.add_argument("--adapt-lr-schedule", choices=ADAPT_LR_SCHEDULES, default=None,
                   help="geometric: step s at adapt_lr * decay**s; first: every step after the first at "
                        "adapt_lr * decay (MAML 2017's test scripts); default: the run's")
    e.add_argument("--batch-unit", choices=BATCH_UNITS, default=None,
                   help="--episodes-per-step counts episodes or env steps (rllab's batch_size); default: the run's")
    e.add_argument("--out-tag", default="", help="write a new result file with this tag added (keeps the run's)")
    sub.add_parser("report", help="tables, CSV and plots from the result files")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``run --preset in-context`` expanded into its flags before the ones given."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.command == "run" and a.preset == "in-context":
        args = list(sys.argv[1:] if argv is None else argv)
        at = args.index("run") + 1
        a = p.parse_args([*args[:at], *in_context_preset_flags(a.env), *args[at:]])
        a.preset = None
    elif a.command == "run" and a.preset:  # maml2017's settings for this model, before the flags given
        from ssm_metarl_ray.presets import model_preset_fields

        args = list(sys.argv[1:] if argv is None else argv)
        at = args.index("run") + 1
        a = p.parse_args([*args[:at], *_as_flags(model_preset_fields(a.preset, a.env, a.model)), *args[at:]])
    return a


def main(argv: list[str] | None = None) -> dict | None:
    a = parse_args(argv)
    if a.command == "run":
        return cmd_run(a)
    if a.command == "suite":
        cmd_suite(a)
        return None
    if a.command == "evaluate":
        return cmd_evaluate(a)
    from learning_report import report

    return report(OUT_ROOT)


if __name__ == "__main__":
    main()
