"""Command line: ``ssm-metarl {train,evaluate,envs,tune,benchmark,rollout}`` (also ``python -m ssm_metarl_ray``).

Bad input gets one line on stderr naming the bad value and what is allowed, and exit code 2; nothing
is written before the arguments have been validated.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ssm_metarl_ray.config import (
    ADAPTATION_MODES,
    DEFAULT_INNER_LR,
    EVAL_MODES,
    METHODS,
    MODELS,
    OUTER_OPTIMIZERS,
    AdaptConfig,
    ConfigError,
    ExperimentConfig,
    MetaConfig,
    ModelConfig,
)


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    train_parser: argparse.ArgumentParser  # the ``train`` subcommand's (set on the top-level parser)

    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    d, m, a, mo = ExperimentConfig(), MetaConfig(), AdaptConfig(), ModelConfig()
    p.add_argument("--env", "--env_name", "--env-name", dest="env", default=d.env,
                   help="task family (see `ssm-metarl envs`)")
    p.add_argument("--model", default=mo.kind, help=f"policy core: {', '.join(MODELS)}")
    p.add_argument("--adaptation-mode", "--adaptation_mode", dest="adaptation_mode", default=None,
                   help="evaluate only this mode (standard|hybrid|in-context); default: standard and hybrid "
                        "(in-context method: in-context and standard)")
    p.add_argument("--iterations", "--num_epochs", "--num-epochs", dest="iterations", type=int, default=None,
                   help=f"meta-iterations (default {d.iterations}; with --resume: extend the run to this many)")
    p.add_argument("--meta-batch-size", type=int, default=m.meta_batch_size, help="tasks per meta-iteration")
    p.add_argument("--episodes-per-task", type=int, default=m.episodes_per_task,
                   help="trajectories per task for inner and outer loss")
    p.add_argument("--inner-lr", "--inner_lr", dest="inner_lr", type=float, default=None,
                   help="inner (and, unless --adapt-lr, test-time) PG step size; default per model: "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_INNER_LR.items()))
    p.add_argument("--inner-steps", type=int, default=m.inner_steps,
                   help="inner policy-gradient steps (0: multi-task pretraining without meta-learning)")
    p.add_argument("--outer-lr", "--outer_lr", dest="outer_lr", type=float, default=m.outer_lr)
    p.add_argument("--outer-steps", type=int, default=m.outer_steps)
    p.add_argument("--first-order", action="store_true", help="first-order MAML meta-gradient")
    p.add_argument("--method", default=m.method,
                   help=f"meta-learning method: {' or '.join(METHODS)} (in-context: recurrent PPO over trials, the "
                        "policy adapts in its state; its defaults: " + ", ".join(
                            f"--{k.replace('_', '-')} {v}" for k, v in IN_CONTEXT_DEFAULTS.items()) +
                        "; ssm: --outer-lr 1e-4)")
    p.add_argument("--episodes-per-trial", type=int, default=m.episodes_per_trial,
                   help="in-context: episodes per trial (the recurrent state carries across them)")
    p.add_argument("--ppo-minibatches", type=int, default=m.ppo_minibatches,
                   help="in-context: minibatches of trials per PPO epoch (--outer-steps epochs)")
    p.add_argument("--outer-optimizer", default=m.outer_optimizer,
                   help=f"meta-update: {' or '.join(OUTER_OPTIMIZERS)} (clipped: ProMP-style clipped surrogate + "
                        "Adam; trpo: MAML 2017's natural-gradient step in a KL trust region)")
    p.add_argument("--max-kl", dest="trpo_max_kl", type=float, default=m.trpo_max_kl,
                   help="TRPO trust region (mean KL of the adapted policies)")
    p.add_argument("--baseline", default="fit",
                   help="advantage baseline of inner and adaptation steps: fit (linear baseline fitted on the same "
                        "batch, ProMP) or lagged (fitted on the task's previous batch, 0 at first: rllab/MAML 2017)")
    p.add_argument("--value-coef", type=float, default=m.value_coef,
                   help="weight of the critic's value regression (the critic never moves the core)")
    p.add_argument("--head-init-gain", type=float, default=mo.head_init_gain,
                   help="orthogonal-init gain of the actor head")
    p.add_argument("--head-hidden", type=int, default=mo.head_hidden,
                   help="hidden width of MLP actor and critic heads (0: linear heads)")
    p.add_argument("--normalize-rewards", action="store_true",
                   help="in-context: PPO divides rewards by the running std of the return (MuJoCo)")
    p.add_argument("--preset", default=None,
                   help="published protocol for --env (maml2017); flags given explicitly override it")
    p.add_argument("--hidden-size", type=int, default=mo.hidden_size)
    p.add_argument("--num-layers", type=int, default=mo.num_layers)
    p.add_argument("--state-size", type=int, default=mo.state_size)
    p.add_argument("--adapt-lr", type=float, default=None, help="test-time step size (default: --inner-lr)")
    p.add_argument("--adapt-steps", type=int, default=a.adapt_steps)
    p.add_argument("--episodes-per-step", type=int, default=None,
                   help="fresh trajectories per test-time adaptation step (default: --episodes-per-task)")
    p.add_argument("--grad-clip", type=float, default=a.grad_clip)
    p.add_argument("--buffer-size", "--buffer_size", dest="buffer_size", type=int, default=a.buffer_size)
    p.add_argument("--experience-batch-size", "--experience_batch_size", dest="experience_batch_size", type=int,
                   default=a.experience_batch_size)
    p.add_argument("--experience-weight", "--experience_weight", dest="experience_weight", type=float,
                   default=a.experience_weight, help="replay-loss weight in hybrid mode, in [0, 1]")
    p.add_argument("--num-train-tasks", type=int, default=d.num_train_tasks)
    p.add_argument("--num-test-tasks", type=int, default=d.num_test_tasks)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.num_threads, help="torch threads (0: default)")
    p.add_argument("--output-dir", "--save_dir", dest="output_dir", default=None,
                   help=f"default: {d.output_dir} (with --resume: the run directory of the checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
    r = p.add_argument_group("Ray runtime")
    r.add_argument("--num-workers", type=int, default=None,
                   help="rollout-worker actors; 0: sample in this process without Ray; default: the CPUs Ray "
                        "sees minus 1 (the learner), at least 1")
    r.add_argument("--address", default=None,
                   help="Ray cluster to attach to (default: RAY_ADDRESS, else start a local cluster)")
    r.add_argument("--learner-gpus", type=float, default=0.0,
                   help="> 0: run the learner in an actor with this many GPUs")
    r.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint every K iterations (0: only at the end)")
    r.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run whose checkpoint (or run directory) is DIR; its config is used")
    r.add_argument("--sample-timeout", type=float, default=None,
                   help="seconds a rollout worker may go without returning a task before it is replaced")
    r.add_argument("--dashboard", action="store_true",
                   help="start the Ray dashboard with a local cluster (needed by `ray list actors`)")


def build_parser() -> _Parser:
    parser = _Parser(prog="ssm-metarl", description="Meta-RL with state-space-model policies (MetaMAML, "
                     "standard and hybrid test-time adaptation).")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    parser.train_parser = sub.add_parser("train", help="meta-train, then evaluate adaptation on held-out tasks")
    _add_train_flags(parser.train_parser)
    ev = sub.add_parser("evaluate", help="re-run the held-out evaluation of a checkpoint")
    ev.add_argument("--checkpoint", required=True, help="checkpoint directory written by `train`")
    ev.add_argument("--adaptation-mode", "--adaptation_mode", dest="adaptation_mode", default=None)
    ev.add_argument("--output-dir", default=None, help="where to write metrics/plot (default: next to it)")
    ev.add_argument("--num-test-tasks", type=int, default=None)
    sub.add_parser("envs", help="list task families")
    from ssm_metarl_ray.sweeps.cli import add_tune_parser  # no Ray import

    add_tune_parser(sub)
    from ssm_metarl_ray.benchmark_cli import add_benchmark_parser  # no torch import

    add_benchmark_parser(sub)
    from ssm_metarl_ray.rollout_cli import add_rollout_parser  # no torch / MuJoCo import

    add_rollout_parser(sub)
    return parser


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UsageError(msg)


def resolve_env_flag(name: str, flag: str = "--env") -> tuple[str, str | None]:
    """``(family, note)`` for ``name``, a family or a gymnasium id such as ``CartPole-v1`` (``note``: the line
    saying which family runs, None for a family name); an ambiguous or unknown id is a ``UsageError``."""
    from ssm_metarl_ray.envs import resolve_env

    try:
        return resolve_env(name, flag)
    except ValueError as e:
        raise UsageError(str(e)) from None


def print_note(note: str | None) -> None:
    """``note`` (e.g. which family a gymnasium id runs) on stderr, once the arguments are valid."""
    if note:
        print(f"ssm-metarl: {note}", file=sys.stderr)


# config fields whose flag is not ``--<last part of the field, dashed>``
_FLAG_OF = {"meta.trpo_max_kl": "--max-kl", "num_threads": "--threads", "model.kind": "--model"}


def flag_of(field: str) -> str:
    """The train flag that sets the dotted config ``field``."""
    return _FLAG_OF.get(field, "--" + field.rsplit(".", 1)[-1].replace("_", "-"))


def validated(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg.validate()`` (the config's one rule table), its error worded with the flag's name."""
    try:
        return cfg.validate()
    except ConfigError as e:
        msg = str(e)
        raise UsageError(msg.replace(e.field, flag_of(e.field), 1) if e.field else msg) from None


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The ExperimentConfig the train flags describe, validated (:func:`validated`); ``UsageError``
    otherwise. Only what the config cannot check itself is checked here (flags with "unset" values)."""
    if args.iterations is None:
        args.iterations = ExperimentConfig().iterations
    args.env = resolve_env_flag(args.env)[0]  # a gymnasium id -> its family (cmd_train prints the note)
    _check(args.model in MODELS, f"unknown --model {args.model!r}; allowed: {', '.join(MODELS)}")
    _check(args.adaptation_mode in (None, *EVAL_MODES),
           f"unknown --adaptation-mode {args.adaptation_mode!r}; allowed: {', '.join(EVAL_MODES)}")
    _check(args.episodes_per_step is None or args.episodes_per_step > 0,
           f"--episodes-per-step must be a positive integer, got {args.episodes_per_step}")
    _check(args.adapt_lr is None or (math.isfinite(args.adapt_lr) and args.adapt_lr > 0),
           f"--adapt-lr must be a finite number > 0, got {args.adapt_lr}")
    if args.inner_lr is None:
        args.inner_lr = DEFAULT_INNER_LR[args.model]
    in_context = args.method == "in-context"
    model = ModelConfig(kind=args.model, hidden_size=args.hidden_size, num_layers=args.num_layers,
                        state_size=args.state_size, head_init_gain=args.head_init_gain,
                        head_hidden=args.head_hidden)
    meta = replace(MetaConfig(), method=args.method, episodes_per_trial=args.episodes_per_trial,
                   ppo_minibatches=args.ppo_minibatches, gae_lambda=0.95 if in_context else 1.0,
                   meta_batch_size=args.meta_batch_size, episodes_per_task=args.episodes_per_task,
                   inner_lr=args.inner_lr, inner_steps=args.inner_steps, outer_lr=args.outer_lr,
                   outer_steps=args.outer_steps, first_order=args.first_order,
                   outer_optimizer=args.outer_optimizer, trpo_max_kl=args.trpo_max_kl, value_coef=args.value_coef,
                   baseline=args.baseline, normalize_rewards=args.normalize_rewards)
    adapt = replace(AdaptConfig(), adaptation_mode=args.adaptation_mode if args.adaptation_mode in ADAPTATION_MODES
                    else "standard",
                    adapt_lr=args.adapt_lr if args.adapt_lr is not None else args.inner_lr,
                    adapt_steps=args.adapt_steps,
                    episodes_per_step=args.episodes_per_step or args.episodes_per_task,
                    grad_clip=args.grad_clip, buffer_size=args.buffer_size, baseline=args.baseline,
                    experience_batch_size=args.experience_batch_size, experience_weight=args.experience_weight)
    return validated(ExperimentConfig(env=args.env, iterations=args.iterations,
                                      num_train_tasks=args.num_train_tasks, num_test_tasks=args.num_test_tasks,
                                      seed=args.seed, output_dir=args.output_dir or ExperimentConfig().output_dir,
                                      num_threads=args.threads, model=model, meta=meta, adapt=adapt))


def runtime_from_args(args: argparse.Namespace):
    from ssm_metarl_ray.runtime.config import RuntimeConfig

    _check(args.sample_timeout is None or args.sample_timeout > 0,
           f"--sample-timeout must be > 0, got {args.sample_timeout}")
    extra = {"sample_timeout_s": args.sample_timeout} if args.sample_timeout is not None else {}
    rt = RuntimeConfig(num_workers=args.num_workers, address=args.address, learner_gpus=args.learner_gpus,
                       checkpoint_every=args.checkpoint_every, include_dashboard=args.dashboard, **extra)
    problems = rt.problems()
    _check(not problems, problems[0] if problems else "")
    return rt


def _resume_dir(path: str) -> Path:
    """A checkpoint directory, or a run directory holding ``checkpoint/``."""
    from ssm_metarl_ray.utils.checkpoint import CONFIG

    p = Path(path)
    if (p / "checkpoint" / CONFIG).is_file():
        p = p / "checkpoint"
    _check((p / CONFIG).is_file(), f"--resume {path!r} is not a checkpoint directory (no {CONFIG} in it)")
    return p


def _check_output_dir(path: str) -> Path:
    """``path`` as the run's output directory, after probing that it can be created and written to: a
    probe file is written and removed, and so are the directories the probe created (whatever writes
    outputs later creates them again), so a run refused afterwards leaves nothing behind."""
    out = Path(path)
    _check(not out.exists() or out.is_dir(), f"--output-dir {path!r} exists and is not a directory")
    missing = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise UsageError(f"--output-dir {path!r} is not writable ({e.strerror or type(e).__name__})") from None
    finally:
        for p in missing:
            try:
                p.rmdir()
            except OSError:
                pass
    return out


def _check_memory(cfg: ExperimentConfig, address: str | None = None) -> None:
    """Refuse sizes that cannot fit (estimate: utils/resources.py) on this machine; when attaching to a
    cluster the big parts run elsewhere, so only a local run is checked."""
    import os

    from ssm_metarl_ray.utils.resources import available_bytes, env_dims, memory_problem

    if address or os.environ.get("RAY_ADDRESS"):
        return
    problem = memory_problem(cfg, env_dims(cfg.env), available_bytes())
    _check(problem is None, problem or "")


def _check_resumable(ckpt: Path) -> None:
    """Everything ``--resume`` reads, read once up front: learner state, counters, buffer (a bad file is a
    ``CheckpointError`` before any work starts, not a traceback after the Ray cluster is up)."""
    from ssm_metarl_ray.utils.checkpoint import LEARNER, load_buffer, load_state, load_tensors

    load_tensors(ckpt, LEARNER)
    load_state(ckpt)
    load_buffer(ckpt)


def cmd_envs() -> int:
    from ssm_metarl_ray.envs import FAMILIES

    for name, fam in FAMILIES.items():
        print(f"{name:<18} {fam.description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    rt = runtime_from_args(args)
    resume, note = None, None
    if args.resume is not None:  # the experiment config comes from the checkpoint; runtime flags from here
        from ssm_metarl_ray.utils.checkpoint import load_config

        resume = _resume_dir(args.resume)
        cfg = load_config(resume)
        _check(args.iterations is None or args.iterations > 0,
               f"--iterations must be a positive integer, got {args.iterations}")
        cfg = replace(cfg, output_dir=args.output_dir or str(resume.parent),
                      iterations=args.iterations or cfg.iterations)
        _check_resumable(resume)
    else:
        note = resolve_env_flag(args.env)[1]
        cfg = config_from_args(args)
    _check_memory(cfg, rt.address)
    out = _check_output_dir(cfg.output_dir)  # last: it creates the directory
    print_note(note)  # e.g. which family --env CartPole-v1 runs
    modes = eval_modes(args.adaptation_mode, cfg)
    if rt.num_workers is None and not _ray_available():
        rt = replace(rt, num_workers=0)
    from ssm_metarl_ray.run import run_training  # torch etc.: only once the arguments are valid

    run_training(cfg, out, modes, verbose=not args.quiet, runtime=rt, resume=resume)
    return 0


def eval_modes(flag: str | None, cfg: ExperimentConfig) -> list[str]:
    """Held-out evaluation modes: the one asked for, else standard + hybrid (maml) or in-context +
    standard (in-context method)."""
    if flag:
        return [flag]
    return ["in-context", "standard"] if cfg.meta.method == "in-context" else list(ADAPTATION_MODES)


def _ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ssm_metarl_ray.run import run_evaluation
    from ssm_metarl_ray.utils.checkpoint import load_config, load_tensors

    _check(args.adaptation_mode in (None, *EVAL_MODES),
           f"unknown --adaptation-mode {args.adaptation_mode!r}; allowed: {', '.join(EVAL_MODES)}")
    _check(args.num_test_tasks is None or args.num_test_tasks > 0,
           f"--num-test-tasks must be a positive integer, got {args.num_test_tasks}")
    ckpt = Path(args.checkpoint)
    cfg = load_config(ckpt)
    weights = load_tensors(ckpt)
    if args.num_test_tasks:
        cfg = replace(cfg, num_test_tasks=args.num_test_tasks)
    _check_memory(cfg)
    out = _check_output_dir(args.output_dir or str(ckpt.parent / "evaluation"))
    modes = eval_modes(args.adaptation_mode, cfg)
    run_evaluation(cfg, weights, ckpt, out, modes)  # checks buffer and weights before writing anything
    return 0


# defaults of the train flags under --method in-context (PPO over 2-episode trials, VariBAD-like)
IN_CONTEXT_DEFAULTS = {"outer_lr": 1e-3, "outer_steps": 4, "value_coef": 0.5, "episodes_per_task": 4,
                       "episodes_per_trial": 2}
# ... whose Adam step size depends on the model: the SSM's PPO updates move its policy ~10x more per step
# (navigation-2d, benchmarks/README.md: 1e-3 -23.1 by episode 2, 1e-4 -16.1 / -17.2 over two seeds)
IN_CONTEXT_OUTER_LR = {"ssm": 1e-4}

# preset fields that are also train flags (same names); a preset sets their defaults
_PRESET_FLAGS = ("iterations", "num_train_tasks", "num_test_tasks", "meta_batch_size", "episodes_per_task",
                 "inner_lr", "inner_steps", "outer_optimizer", "outer_steps", "trpo_max_kl", "adapt_lr",
                 "adapt_steps", "episodes_per_step")


def parse_with_preset(parser: _Parser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; with ``train --preset NAME`` parse again with the preset's values as defaults, so flags given
    explicitly still win."""
    from ssm_metarl_ray.envs import env_names
    from ssm_metarl_ray.presets import preset_names, preset_overrides

    args = parser.parse_args(argv)
    if args.command == "train" and args.method == "in-context":  # the method's defaults; explicit flags win
        parser.train_parser.set_defaults(**IN_CONTEXT_DEFAULTS)
        parser.train_parser.set_defaults(outer_lr=IN_CONTEXT_OUTER_LR.get(args.model, IN_CONTEXT_DEFAULTS["outer_lr"]))
        args = parser.parse_args(argv)
    if args.command != "train" or args.preset is None:
        return args
    _check(args.preset in preset_names(), f"unknown --preset {args.preset!r}; allowed: {', '.join(preset_names())}")
    env = resolve_env_flag(args.env)[0] if args.resume is None else args.env  # gymnasium id -> family
    _check(env in env_names(), f"unknown --env {env!r}; allowed: {', '.join(env_names())}")
    try:
        overrides = preset_overrides(args.preset, env)
    except ValueError as e:
        raise UsageError(str(e)) from None
    flat = {k: v for part in overrides.values() for k, v in part.items()}
    parser.train_parser.set_defaults(**{k: flat[k] for k in _PRESET_FLAGS if k in flat})
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from ssm_metarl_ray.runtime.errors import RayRuntimeError, RuntimeSetupError
    from ssm_metarl_ray.utils.checkpoint import CheckpointError

    parser = build_parser()
    try:
        args = parse_with_preset(parser, argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "envs":
            return cmd_envs()
        if args.command == "train":
            return cmd_train(args)
        if args.command == "benchmark":
            from ssm_metarl_ray.benchmark_cli import cmd_benchmark

            return cmd_benchmark(args)
        if args.command == "tune":
            from ssm_metarl_ray.sweeps.cli import cmd_tune

            return cmd_tune(args)
        if args.command == "rollout":
            from ssm_metarl_ray.rollout_cli import cmd_rollout

            return cmd_rollout(args)
        return cmd_evaluate(args)
    except (UsageError, CheckpointError) as e:
        print(f"ssm-metarl: error: {e}", file=sys.stderr)
        return 2
    except RayRuntimeError as e:  # Ray setup (bad --address: exit 2), sampling failures and timeouts (exit 1)
        print(f"ssm-metarl: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, RuntimeSetupError) else 1
    except KeyboardInterrupt:
        print("ssm-metarl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
