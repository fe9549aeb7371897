"""Command line: ``ssm-metarl {train,evaluate,envs,tune,benchmark,rollout}`` (also ``python -m ssm_metarl_ray``).

Bad input gets one line on stderr naming the bad value and what is allowed, and exit code 2; nothing
is written before the arguments have been validated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ssm_metarl_ray.config import (
    ADAPTATION_MODES,
    DEFAULT_INNER_LR,
    EVAL_MODES,
    FOLLOWS,
    IN_CONTEXT_DEFAULTS,
    IN_CONTEXT_OUTER_LR,
    SUBCONFIGS,
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    build_experiment_config,
    field_choices,
    field_comments,
    field_types,
    flat_items,
)


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    train_parser: argparse.ArgumentParser  # the ``train`` subcommand's (set on the top-level parser)

    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


# ---- train flags: one per config field, generated from the dataclasses ------------------------------------
# A field's flag is --<last part of its dotted name, dashed>, except these ...
_FLAG_OF = {"meta.trpo_max_kl": "--max-kl", "num_threads": "--threads", "model.kind": "--model",
            "adapt.clip_eps": "--adapt-clip-eps", "adapt.baseline": "--adapt-baseline",
            "adapt.batch_unit": "--adapt-batch-unit"}
# ... and it also accepts the seed's spellings
_ALIASES = {"env": ("--env_name", "--env-name"), "iterations": ("--num_epochs", "--num-epochs"),
            "output_dir": ("--save_dir",), "meta.inner_lr": ("--inner_lr",), "meta.outer_lr": ("--outer_lr",),
            "adapt.buffer_size": ("--buffer_size",), "adapt.experience_batch_size": ("--experience_batch_size",),
            "adapt.experience_weight": ("--experience_weight",)}
_NOT_FLAGS = {"adapt.adaptation_mode"}  # set by --adaptation-mode, which also picks the evaluation modes
_MORE_HELP = {"iterations": "with --resume: extend the run to this many",
              "output_dir": "with --resume: the run directory of the checkpoint"}
_GROUPS = {"": "experiment", "model": "policy model", "meta": "meta-training", "adapt": "test-time adaptation"}
_TYPES = {"int": int, "float": float, "str": str}


def flag_of(field: str) -> str:
    """The train flag that sets the dotted config ``field``."""
    return _FLAG_OF.get(field, "--" + field.rsplit(".", 1)[-1].replace("_", "-"))


def _dest(field: str) -> str:
    return flag_of(field)[2:].replace("-", "_")


def train_fields() -> list[str]:
    """The dotted config fields that have a train flag, in dataclass order."""
    return [f for f, _ in flat_items(ExperimentConfig()) if f not in _NOT_FLAGS]


def _default_text(field: str, default) -> str:
    """How the flag's help states its default (dependent defaults in words: config.derive)."""
    short = field.rsplit(".", 1)[-1]
    if field in FOLLOWS:
        return f"default: {flag_of(FOLLOWS[field])}"
    if field == "meta.inner_lr":
        return "default per model: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_INNER_LR.items())
    text = f"default: {default}"
    if field in IN_CONTEXT_DEFAULTS:
        ic = IN_CONTEXT_DEFAULTS[field]
        text += f"; --method in-context: {ic}" + (
            "".join(f", {k} {v}" for k, v in IN_CONTEXT_OUTER_LR.items()) if field == "meta.outer_lr" else "")
    allowed = field_choices(field) if short != "env" else None
    return text + (f"; one of {', '.join(allowed)}" if allowed else "")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config field (help: the field's comment in config.py, then its default), defaulting to
    None = unset, so that ``config_from_args`` can layer preset, method and per-model defaults under the
    flags actually given; then the flags that are not config fields."""
    types = field_types()
    comments = {"": field_comments(ExperimentConfig),
                **{k: field_comments(c) for k, c in SUBCONFIGS.items()}}
    groups = {k: p.add_argument_group(title) for k, title in _GROUPS.items()}
    for field, default in flat_items(ExperimentConfig()):
        if field in _NOT_FLAGS:
            continue
        sub, _, short = field.rpartition(".")
        help_text = "; ".join(x for x in (comments[sub].get(short, ""), _MORE_HELP.get(field),
                                          _default_text(field, default)) if x)
        kwargs = ({"action": argparse.BooleanOptionalAction} if types[field] == "bool"
                  else {"type": _TYPES[types[field]], "metavar": short.upper()})
        groups[sub].add_argument(flag_of(field), *_ALIASES.get(field, ()), dest=_dest(field), default=None,
                                 help=help_text.replace("%", "%%"), **kwargs)
    e = groups[""]
    e.add_argument("--adaptation-mode", "--adaptation_mode", dest="adaptation_mode", default=None,
                   help="evaluate only this mode (standard|hybrid|in-context) and adapt with it; default: "
                        "standard and hybrid (in-context method: in-context and standard)")
    e.add_argument("--preset", default=None,
                   help="protocol for --env: maml2017 (MAML 2017's published settings) or in-context (our in-context "
                        "protocol, --method in-context); flags given explicitly override it")
    e.add_argument("--quiet", action="store_true", help="no per-iteration progress lines")
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
    r.add_argument("--no-worker-gradients", dest="worker_gradients", action="store_false",
                   help="the learner computes every task's meta-gradient itself (default: the rollout workers "
                        "compute a share of them between sampling rounds; MAML's clipped learner only)")
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


def flag_error(e: ConfigError) -> UsageError:
    """A config's ``ConfigError`` worded with the flag's name instead of the dotted field."""
    msg = str(e)
    return UsageError(msg.replace(e.field, flag_of(e.field), 1) if e.field else msg)


def explicit_fields(args: argparse.Namespace) -> dict[str, object]:
    """Dotted config field -> value of every train flag given (generated flags default to None = unset)."""
    return {f: getattr(args, _dest(f)) for f in train_fields() if getattr(args, _dest(f), None) is not None}


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The ExperimentConfig the train flags describe: the flags given, over ``--preset``'s values, over the
    defaults that depend on other fields (``config.derive``: in-context method, per-model step size), over
    the dataclass defaults; validated by the config's rule table, errors worded with the flags' names
    (``UsageError``)."""
    _check(args.adaptation_mode in (None, *EVAL_MODES),
           f"unknown --adaptation-mode {args.adaptation_mode!r}; allowed: {', '.join(EVAL_MODES)}")
    flat = explicit_fields(args)
    flat["env"] = resolve_env_flag(str(flat.get("env", ExperimentConfig().env)))[0]  # gymnasium id -> its family
    if args.adaptation_mode in ADAPTATION_MODES:
        flat["adapt.adaptation_mode"] = args.adaptation_mode
    model = str(flat.get("model.kind", ModelConfig().kind))
    preset = _preset_fields(args.preset, str(flat["env"]), model) if getattr(args, "preset", None) else {}
    try:
        return build_experiment_config(preset, flat)
    except ConfigError as e:
        raise flag_error(e) from None


def _preset_fields(name: str, env: str, model: str) -> dict[str, object]:
    """Dotted fields of preset ``name`` for family ``env`` and the ``model`` kind on it; ``UsageError`` for an
    unknown one."""
    from ssm_metarl_ray.envs import env_names
    from ssm_metarl_ray.presets import preset_names, preset_overrides

    _check(name in preset_names(), f"unknown --preset {name!r}; allowed: {', '.join(preset_names())}")
    _check(env in env_names(), f"unknown --env {env!r}; allowed: {', '.join(env_names())}")
    try:
        overrides = preset_overrides(name, env, model)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return {(f"{sub}.{k}" if sub else k): v for sub, part in overrides.items() for k, v in part.items()}


def runtime_from_args(args: argparse.Namespace):
    from ssm_metarl_ray.runtime.config import RuntimeConfig

    _check(args.sample_timeout is None or args.sample_timeout > 0,
           f"--sample-timeout must be > 0, got {args.sample_timeout}")
    extra = {"sample_timeout_s": args.sample_timeout} if args.sample_timeout is not None else {}
    rt = RuntimeConfig(num_workers=args.num_workers, address=args.address, learner_gpus=args.learner_gpus,
                       checkpoint_every=args.checkpoint_every, include_dashboard=args.dashboard,
                       worker_gradients=args.worker_gradients, **extra)
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


def _check_balanced_tasks(cfg: ExperimentConfig) -> None:
    """``--balanced-tasks`` against the training tasks themselves (the number of distinct ones must divide
    the meta-batch size); ``UsageError`` otherwise."""
    if not cfg.meta.balanced_tasks:
        return
    from ssm_metarl_ray.envs import make_env, task_splits
    from ssm_metarl_ray.training.meta_train import check_balanced, task_groups

    train, _ = task_splits(make_env(cfg.env), cfg.num_train_tasks, cfg.num_test_tasks, cfg.seed)
    try:
        check_balanced(cfg.meta, task_groups(train))
    except ConfigError as e:
        raise flag_error(e) from None


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
        note = resolve_env_flag(args.env or ExperimentConfig().env)[1]
        cfg = config_from_args(args)
    _check_memory(cfg, rt.address)
    _check_balanced_tasks(cfg)
    out = _check_output_dir(cfg.output_dir)  # last: it creates the directory
    print_note(note)  # e.g. which family --env CartPole-v1 runs
    modes = eval_modes(args.adaptation_mode, cfg)
    if rt.num_workers is None and not _ray_available():
        rt = replace(rt, num_workers=0)
    from ssm_metarl_ray.run import run_training  # torch etc.: only once the arguments are valid

    run_training(cfg, out, modes, verbose=not args.quiet, runtime=rt, resume=resume)
    return 0


def eval_modes(flag: str | None, cfg: ExperimentConfig) -> list[str]:
    """Held-out evaluation modes: the one asked for, else standard + hybrid (maml), in-context + standard
    (in-context method) or all three (in-context-maml)."""
    if flag:
        return [flag]
    return {"in-context": ["in-context", "standard"],
            "in-context-maml": ["in-context", *ADAPTATION_MODES]}.get(cfg.meta.method, list(ADAPTATION_MODES))


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


def main(argv: list[str] | None = None) -> int:
    from ssm_metarl_ray.runtime.errors import RayRuntimeError, RuntimeSetupError
    from ssm_metarl_ray.utils.checkpoint import CheckpointError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
