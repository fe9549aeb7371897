"""Typed configuration: one frozen dataclass per concern, grouped in :class:`ExperimentConfig`.

Every field has a comment saying what it controls; the CLI maps its flags onto these fields and
checkpoints store ``asdict(config)`` (plain JSON, never pickle). The value rules of every field (type,
range, choices) live in one table below (:func:`check_field`); the CLI, the sweep YAML and loaded
checkpoints all go through it (:meth:`ExperimentConfig.validate`, :meth:`ExperimentConfig.from_dict`).
"""

from __future__ import annotations

import inspect
import io
import math
import re
import tokenize
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

MODELS = ("ssm", "lstm", "gru", "transformer", "mlp")
OUTER_OPTIMIZERS = ("clipped", "trpo")
# Default inner/test-time PG step size per model (the CLI uses it unless --inner-lr is given). Measured
# (benchmarks/README.md, tests/test_learning.py): mlp 0.1 (MAML 2017's locomotion step; navigation-2d's
# maml2017 preset uses MAML's 0.5); ssm 0.02 (one inner step of the SSM moves its action mean ~15x more
# per unit step than the mlp's at initialisation, benchmarks/results/inner_step_size.json). gru, lstm and
# transformer keep 0.02 until measured.
DEFAULT_INNER_LR = {"ssm": 0.02, "mlp": 0.1, "gru": 0.02, "lstm": 0.02, "transformer": 0.02}
ADAPTATION_MODES = ("standard", "hybrid")
BASELINES = ("fit", "lagged")
ADAPT_LR_SCHEDULES = ("geometric", "first")  # adapt.adapt_lr_schedule
BATCH_UNITS = ("episodes", "steps")  # meta.batch_unit, adapt.batch_unit
INNER_PARAMS = ("all", "heads")  # meta.inner_params / adapt.adapt_params: what an inner step adapts
ACTIVATIONS = ("tanh", "relu")
MLP_INITS = ("torch", "xavier")  # model.mlp_init
METHODS = ("maml", "in-context", "in-context-maml")  # meta.method
WARMUP_SCHEDULES = ("pool", "in-turn")  # meta.warmup_schedule
EVAL_MODES = (*ADAPTATION_MODES, "in-context")  # held-out evaluation: gradient adaptation or trials


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message is one line naming the field (dotted),
    the value and what is allowed. ``field``: that dotted name, when one field is at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# ---- value rules of the ExperimentConfig fields (dotted names): the one table -----------------------------
POS_INT = {"iterations", "num_train_tasks", "num_test_tasks", "model.hidden_size", "model.num_layers",
           "model.state_size", "model.num_heads", "model.context_len", "meta.meta_batch_size",
           "meta.episodes_per_task", "meta.outer_steps", "meta.trpo_cg_iters", "meta.trpo_ls_steps",
           "meta.episodes_per_trial", "meta.ppo_minibatches", "meta.warmup_tasks",
           "adapt.episodes_per_step", "adapt.buffer_size", "adapt.experience_batch_size"}
NONNEG_INT = {"meta.inner_steps", "adapt.adapt_steps", "model.head_hidden", "model.ssm_input_hidden",
              "meta.warmup_iterations"}
INT_RANGE = {"seed": (0, 2**63 - 1),  # numpy and torch seeds are non-negative
             "num_threads": (0, 1024)}  # torch aborts on absurd thread counts
POS_FLOAT = {"meta.inner_lr", "meta.outer_lr", "meta.max_grad_norm", "meta.trpo_max_kl", "adapt.adapt_lr",
             "adapt.grad_clip", "adapt.adapt_lr_decay", "model.head_init_gain",
             "meta.recurrent_lr_scale", "meta.inner_lr_decay"}
NONNEG_FLOAT = {"meta.value_coef", "meta.entropy_coef", "meta.trpo_cg_damping", "meta.task_inference_coef"}
UNIT = {"adapt.experience_weight", "meta.gae_lambda", "model.ssm_r_min"}  # [0, 1]
HALF_OPEN_UNIT = {"meta.gamma", "meta.clip_eps", "adapt.clip_eps", "meta.trpo_ls_ratio"}  # (0, 1]


def field_choices(name: str) -> tuple[str, ...] | None:
    if name == "env":
        from ssm_metarl_ray.envs import env_names  # registry only: no MuJoCo import

        return tuple(env_names())
    return {"model.kind": MODELS, "model.activation": ACTIVATIONS, "model.mlp_init": MLP_INITS,
            "adapt.adaptation_mode": ADAPTATION_MODES, "adapt.adapt_lr_schedule": ADAPT_LR_SCHEDULES,
            "meta.baseline": BASELINES, "adapt.baseline": BASELINES, "meta.batch_unit": BATCH_UNITS,
            "adapt.batch_unit": BATCH_UNITS, "meta.inner_params": INNER_PARAMS, "adapt.adapt_params": INNER_PARAMS,
            "meta.outer_optimizer": OUTER_OPTIMIZERS, "meta.method": METHODS,
            "meta.warmup_schedule": WARMUP_SCHEDULES}.get(name)


def _rule(name: str):
    """``(predicate, what it requires)`` of the range of field ``name``, or None when any value goes."""
    if name in INT_RANGE:
        lo, hi = INT_RANGE[name]
        return (lambda v: lo <= v <= hi), f"an integer in [{lo}, {hi}]"
    rules = ((POS_INT, lambda v: v > 0, "a positive integer"), (NONNEG_INT, lambda v: v >= 0, "an integer >= 0"),
             (POS_FLOAT, lambda v: v > 0, "a finite number > 0"),
             (NONNEG_FLOAT, lambda v: v >= 0, "a finite number >= 0"),
             (UNIT, lambda v: 0 <= v <= 1, "in [0, 1]"), (HALF_OPEN_UNIT, lambda v: 0 < v <= 1, "in (0, 1]"))
    return next(((ok, what) for table, ok, what in rules if name in table), None)


def check_field(name: str, v: Any) -> Any:
    """Type, range and choice check of one value of the dotted field ``name``; returns the value (an int
    given for a float field comes back as float; a numeric string for a float field is parsed, as YAML 1.1
    reads ``3e-4`` as a string). ``ConfigError`` otherwise."""
    typ = field_types()[name]
    if typ == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{name} must be true or false, got {v!r}", name)
        return v
    if typ == "str":
        allowed = field_choices(name)
        if not isinstance(v, str):
            raise ConfigError(f"{name} must be a string, got {v!r}", name)
        if allowed is not None and v not in allowed:
            raise ConfigError(f"unknown {name} {v!r}; allowed: {', '.join(allowed)}", name)
        return v
    if typ == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, got {v!r}", name)
    else:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            rule = _rule(name)
            raise ConfigError(f"{name} must be {rule[1] if rule else 'a finite number'}, got {v!r}", name)
        v = float(v)
    rule = _rule(name)
    if rule is not None and not rule[0](v):
        raise ConfigError(f"{name} must be {rule[1]}, got {v!r}", name)
    return v


SSM_R_MAX = 0.999  # largest initial eigenvalue magnitude of the SSM (models/ssm.py)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "ssm"  # policy core
    hidden_size: int = 64  # width H of the core and of the encoder output
    num_layers: int = 2  # stacked layers of the core (SSM layers, RNN layers, Transformer blocks)
    state_size: int = 32  # SSM: complex modes per layer (P); ignored by the other models
    ssm_r_min: float = 0.9  # SSM: eigenvalue magnitudes start uniform on the ring [ssm_r_min, 0.999] (the
    #   LRU's init; smaller values add fast-decaying modes, memory of the last few steps)
    ssm_input_hidden: int = 0  # SSM: width of a tanh layer before the input projection (0: the projection
    #   is linear). The recurrence is linear in its input, so it can only sum what the input layer offers:
    #   with a nonlinear layer it can accumulate products such as reward x position
    num_heads: int = 2  # Transformer: attention heads
    context_len: int = 64  # Transformer: attention window (steps within the current episode)
    observation_only: bool = False  # feed the core the observation only, not the previous action, reward
    #   and done flag (MAML 2017's feed-forward policy; a recurrent core then cannot adapt in context)
    activation: str = "tanh"  # MLP: hidden activation, "tanh" or "relu" (MAML 2017: relu, 100x100)
    mlp_init: str = "torch"  # MLP core's hidden layers: "torch" (nn.Linear's default: weights and biases
    #   U(+-1/sqrt(fan_in))) or "xavier" (rllab's, MAML 2017's: weights U(+-sqrt(6/(fan_in+fan_out))), zero biases)
    init_log_std: float = 0.0  # Gaussian policies: initial log standard deviation
    head_init_gain: float = 1.0  # orthogonal-init gain of the actor head (1: like the other layers, as the
    #   MAML/ProMP references; 0.01 made one adaptation step move the mean action by ~0.007 std)
    critic_detached: bool = True  # the critic head reads detached core features: value regression can
    #   never drag the shared core (and with it the meta-gradient)
    head_hidden: int = 0  # width of one hidden tanh layer in the actor and critic heads (0: linear heads;
    #   Lu et al. 2023's in-context S5 agent uses MLP heads)
    head_obs: bool = False  # the actor and critic heads read the current observation beside the core's
    #   output (as Ni et al. 2022's recurrent actor-critics): the core carries what the history says,
    #   the heads map the observation precisely
    history_only: bool = False  # the core sees the previous action, reward and done only, not the
    #   observation (needs head_obs: the heads read it): the core infers the task from the history, the
    #   heads act on the observation
    history_gate: bool = False  # the heads read the core's output times a gate whose value per adaptation step
    #   is meta-learned (``Policy.history_gate`` before adaptation, plus ``history_gate_deltas[s]`` at inner
    #   step s; not a gradient step): later steps can turn the core's history features down (needs head_obs)


@dataclass(frozen=True)
class MetaConfig:
    method: str = "maml"  # "maml": MetaMAML (inner PG step, meta-gradient); "in-context": recurrent PPO over
    #   trials (the policy adapts in its state; outer_lr / outer_steps / clip_eps / gae_lambda /
    #   value_coef / entropy_coef / max_grad_norm are PPO's); "in-context-maml": MetaMAML whose
    #   trajectories are trials (the state carries across their episodes, so the policy adapts in
    #   context within a trial and by the inner gradient step across trials)
    meta_batch_size: int = 10  # tasks per meta-iteration
    episodes_per_task: int = 10  # K trajectories per task for the inner update and for the outer loss
    #   (in-context: trials per task)
    episodes_per_trial: int = 1  # in-context(-maml): episodes per trial (the state carries across them)
    batch_unit: str = "episodes"  # what episodes_per_task counts: "episodes" (a batch is exactly that many
    #   episodes) or "steps" (rllab's batch_size, MAML 2017's samplers: whole episodes until the batch holds
    #   at least that many x horizon env steps, so a batch whose episodes end early, as navigation-2d's at
    #   the goal, holds more of them); "steps" needs meta.method maml
    ppo_minibatches: int = 4  # in-context: minibatches of trials per PPO epoch (outer_steps epochs)
    anneal_lr: bool = False  # in-context: the Adam step size decays linearly from outer_lr to 0 over the
    #   run's iterations (CleanRL's PPO default)
    recurrent_lr_scale: float = 1.0  # in-context: Adam step size of the SSM's recurrence parameters (lambda's
    #   nu/theta, gamma, B) relative to outer_lr (S5 and the LRU train them slower than the rest)
    normalize_rewards: bool = False  # in-context: PPO divides rewards by a running std of the discounted
    #   return (the critic learns values in those units), as CleanRL/SB3 do for MuJoCo (measured worse on
    #   navigation-2d: benchmarks/README.md)
    warmup_iterations: int = 0  # a task curriculum: the first warmup_iterations meta-iterations draw their
    #   tasks from the first warmup_tasks training tasks only, then from all (0: no warm-up)
    warmup_tasks: int = 1  # training tasks of the warm-up (e.g. 1: one direction of halfcheetah-dir first)
    task_inference_coef: float = 0.0  # in-context: weight of an auxiliary loss in which a linear head on the
    #   core's output predicts the task's parameters at every step of a trial (squared error; the core is
    #   trained through it to carry what it has inferred about the task: Humplik et al. 2019's belief
    #   supervision; training only: the head is not part of the policy, test time uses no task labels)
    warmup_schedule: str = "pool"  # "pool": each warm-up iteration draws from the first warmup_tasks tasks;
    #   "in-turn": the warm-up splits into warmup_tasks equal phases and phase p trains only on distinct
    #   training task p mod d (d: the number of distinct task parameters; halfcheetah-dir with 2: one
    #   direction, then the other; with 4: forward, backward, forward, backward)
    balanced_tasks: bool = False  # every meta-batch draws each distinct training task parameter set equally
    #   often (stratified; needs meta_batch_size a multiple of their number: halfcheetah-dir's two
    #   directions), instead of meta_batch_size draws from all training tasks
    inner_lr: float = 0.02  # step size of the inner policy-gradient update
    inner_steps: int = 1  # inner updates per task during meta-training
    inner_params: str = "all"  # what the inner step adapts: "all" parameters (MAML) or only the "heads"
    #   (actor, log-std, critic; ANIL, Raghu et al. 2020: the core is meta-learned features, adapted by none)
    inner_lr_decay: float = 1.0  # inner step s (0-based) uses inner_lr * inner_lr_decay**s (as adapt_lr_decay
    #   at test time; 1: every step the same)
    multi_step_loss: bool = False  # with inner_steps > 1: the outer loss averages the clipped surrogate after
    #   EVERY inner step (on the batch sampled after step s, at the parameters after s steps; Antoniou et al.
    #   2019's multi-step loss), not only after the last, so the meta-policy is trained for each step
    first_order: bool = False  # drop second-order terms of the meta-gradient (about half the learner's time;
    #   on the default job the held-out return after 1-3 adaptation steps is 2.0-2.3 lower, 6 seeds:
    #   benchmarks/meta_gradient_order.py)
    outer_lr: float = 3e-3  # Adam step size of the meta-update
    outer_steps: int = 2  # clipped-surrogate optimisation steps per meta-iteration (ProMP style)
    clip_eps: float = 0.2  # surrogate clipping range
    gamma: float = 0.99  # discount
    gae_lambda: float = 1.0  # GAE lambda (1.0 = Monte-Carlo returns minus baseline, as MAML)
    baseline: str = "fit"  # inner-loop advantages: "fit" (linear baseline fitted on the same batch: ProMP,
    #   and MAML 2017's code, whose rllab fork fits before it predicts: cbfinn/maml_rl rllab/sampler/base.py)
    #   or "lagged" (upstream rllab's order: predicted by the fit on the task's previous batch, 0 for the first)
    value_coef: float = 0.0  # weight of the value-head regression in the outer loss (0: advantages come
    #   from the linear baseline, the critic is not needed; > 0 trains only the critic head when detached)
    entropy_coef: float = 0.0  # entropy bonus in the outer loss
    max_grad_norm: float = 1.0  # meta-gradient clipping (clipped optimiser)
    outer_optimizer: str = "clipped"  # "clipped" (ProMP-style clipped surrogate + Adam) or "trpo" (MAML 2017)
    trpo_max_kl: float = 0.01  # TRPO: trust-region size (mean KL of the adapted policies)
    trpo_cg_iters: int = 10  # TRPO: conjugate-gradient iterations
    trpo_cg_damping: float = 1e-5  # TRPO: damping added to the Fisher-vector product
    trpo_exact_fisher: bool = False  # TRPO: Fisher-vector products through the inner step (third-order
    #   derivatives; several times slower); False: the adapted policies' Fisher with the inner-step Jacobian
    #   taken as the identity. Either way the gradient is exact and the line search checks the exact KL.
    trpo_ls_steps: int = 15  # TRPO: backtracking line-search steps (each shrinks the step by trpo_ls_ratio)
    trpo_ls_ratio: float = 0.8  # TRPO: backtracking ratio of the line search

    @property
    def episodes_per_row(self) -> int:
        """Episodes in one row of a MetaMAML batch: a trial for ``in-context-maml``, else one episode."""
        return self.episodes_per_trial if self.method == "in-context-maml" else 1


@dataclass(frozen=True)
class AdaptConfig:
    adaptation_mode: str = "standard"  # "standard" or "hybrid"
    adapt_lr: float = 0.02  # step size of each test-time policy-gradient step
    adapt_params: str = "all"  # what a test-time step adapts: "all" or only the "heads" (as meta.inner_params)
    adapt_steps: int = 3  # test-time gradient steps (returns are reported after each)
    adapt_lr_decay: float = 0.5  # later test-time steps are smaller by this factor (adapt_lr_schedule says how)
    adapt_lr_schedule: str = "geometric"  # "geometric": step s (0-based) uses adapt_lr * adapt_lr_decay**s;
    #   "first": step 0 uses adapt_lr and every later step adapt_lr * adapt_lr_decay (MAML 2017's test scripts:
    #   rllab's VPG with init_learning_rate, e.g. 0.1, 0.05, 0.05 on HalfCheetah)
    episodes_per_step: int = 10  # fresh trajectories per adaptation step
    batch_unit: str = "episodes"  # what episodes_per_step counts at test time, as meta.batch_unit in training
    #   (follows it unless set: MAML 2017's navigation test batches are 4,000 env steps, "steps")
    grad_clip: float = 10.0  # clip each adaptation gradient to this global norm
    baseline: str = "fit"  # "fit": linear baseline fitted on the step's own trajectories (ProMP); "lagged":
    #   predicted by the baseline fitted on the previous step's (rllab, MAML 2017's test; 0 at step 0)
    buffer_size: int = 100_000  # ExperienceBuffer capacity in transitions
    experience_batch_size: int = 16  # replay sequences per hybrid step
    experience_weight: float = 0.1  # weight of the replay loss in hybrid mode, in [0, 1]
    clip_eps: float = 0.2  # clipping of the importance-weighted replay loss


@dataclass(frozen=True)
class ExperimentConfig:
    env: str = "navigation-2d"  # task family short name (``ssm-metarl envs`` lists them)
    iterations: int = 30  # meta-iterations
    num_train_tasks: int = 100  # size of the seeded training task set
    num_test_tasks: int = 20  # held-out test tasks used by evaluation
    seed: int = 0  # seeds the task split, the networks and the sampling
    output_dir: str = "runs/latest"  # where the run writes metrics, plots and checkpoints
    num_threads: int = 0  # torch intra-op threads (0: leave torch's default)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def test_meta(self) -> MetaConfig:
        """``meta`` as test-time sampling sees it: batches counted in ``adapt.batch_unit``."""
        return replace(self.meta, batch_unit=self.adapt.batch_unit)

    def validate(self) -> ExperimentConfig:
        """Check every field against the rule table and the cross-field rules; returns self.
        ``ConfigError`` (one line, the dotted field named) at the first problem."""
        for name, v in flat_items(self):
            check_field(name, v)
        m = self.model
        if self.meta.method == "in-context" and self.meta.value_coef <= 0:
            raise ConfigError("meta.value_coef must be > 0 for meta.method in-context (PPO's advantages come "
                              f"from the critic), got {self.meta.value_coef}", "meta.value_coef")
        if self.meta.task_inference_coef and self.meta.method != "in-context":
            raise ConfigError("meta.task_inference_coef must be 0 unless meta.method is in-context (the PPO "
                              f"learner's auxiliary loss), got {self.meta.task_inference_coef}",
                              "meta.task_inference_coef")
        if self.meta.warmup_iterations and self.meta.warmup_tasks > self.num_train_tasks:
            raise ConfigError(f"meta.warmup_tasks must be at most num_train_tasks ({self.num_train_tasks}), got "
                              f"{self.meta.warmup_tasks}", "meta.warmup_tasks")
        if self.meta.warmup_schedule == "in-turn" and self.meta.warmup_iterations % self.meta.warmup_tasks:
            raise ConfigError(f"meta.warmup_iterations must be a multiple of meta.warmup_tasks "
                              f"({self.meta.warmup_tasks}) for meta.warmup_schedule in-turn (equal phases), got "
                              f"{self.meta.warmup_iterations}", "meta.warmup_iterations")
        for name, unit in (("meta.batch_unit", self.meta.batch_unit), ("adapt.batch_unit", self.adapt.batch_unit)):
            if unit == "steps" and self.meta.method != "maml":
                raise ConfigError(f"{name} steps needs meta.method maml (batches of single episodes), got "
                                  f"meta.method {self.meta.method}", name)
        if m.history_only and (m.observation_only or not m.head_obs):
            raise ConfigError("model.history_only needs model.head_obs (the heads must see the observation) and "
                              f"excludes model.observation_only, got head_obs {m.head_obs}, observation_only "
                              f"{m.observation_only}", "model.history_only")
        if m.history_gate and not m.head_obs:
            raise ConfigError("model.history_gate needs model.head_obs (a gate at 0 must leave the heads the "
                              f"observation), got head_obs {m.head_obs}", "model.history_gate")
        if m.ssm_r_min >= SSM_R_MAX:
            raise ConfigError(f"model.ssm_r_min must be below the largest eigenvalue magnitude {SSM_R_MAX}, got "
                              f"{m.ssm_r_min}", "model.ssm_r_min")
        if m.kind == "transformer" and m.hidden_size % m.num_heads:
            raise ConfigError(f"model.hidden_size must be a multiple of model.num_heads ({m.num_heads}) for "
                              f"the transformer, got {m.hidden_size}", "model.hidden_size")
        return self

    @classmethod
    def from_dict(cls, d: Any) -> ExperimentConfig:
        """Rebuild from ``to_dict`` output, every value checked (:func:`check_field`); unknown keys, wrong
        types and out-of-range values raise ``ConfigError`` (a ``ValueError``) naming them."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping, got {type(d).__name__}")
        d = _with_adapt_batch_unit(d)
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for k, v in d.items():
            if k not in known:
                raise ConfigError(f"unknown config key {k!r}; allowed: {sorted(known)}")
            if k in SUBCONFIGS:
                sub_known = {f.name for f in fields(SUBCONFIGS[k])}
                if not isinstance(v, dict):
                    raise ConfigError(f"{k} must be a mapping, got {v!r}")
                bad = set(v) - sub_known
                if bad:
                    raise ConfigError(f"unknown {k} config key(s) {sorted(bad)}; allowed: {sorted(sub_known)}")
                kwargs[k] = SUBCONFIGS[k](**{s: check_field(f"{k}.{s}", x) for s, x in v.items()})
            else:
                kwargs[k] = check_field(k, v)
        return cls(**kwargs).validate()


SUBCONFIGS: dict[str, type] = {"model": ModelConfig, "meta": MetaConfig, "adapt": AdaptConfig}


def _with_adapt_batch_unit(d: dict) -> dict:
    """A stored config from before ``adapt.batch_unit`` existed (test batches then counted in
    ``meta.batch_unit``) with it filled in, so it evaluates as it did."""
    adapt, meta = d.get("adapt"), d.get("meta")
    if not (isinstance(adapt, dict) and isinstance(meta, dict)) or "batch_unit" in adapt or "batch_unit" not in meta:
        return d
    return {**d, "adapt": {**adapt, "batch_unit": meta["batch_unit"]}}


def field_types() -> dict[str, str]:
    """Dotted ExperimentConfig field -> its type name (``int``, ``float``, ``str``, ``bool``)."""
    out: dict[str, str] = {}
    for f in fields(ExperimentConfig):
        if f.name in SUBCONFIGS:
            out.update({f"{f.name}.{g.name}": str(g.type) for g in fields(SUBCONFIGS[f.name])})
        else:
            out[f.name] = str(f.type)
    return out


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the body of dataclass ``cls`` (the ``#`` comment on the field's line
    and the comment lines continuing it): the help text of its CLI flag. {} when the source is missing."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
    names, out, current = {f.name for f in fields(cls)}, {}, None
    for row, line in enumerate(src.splitlines(), start=1):
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m.group(1) in names:
            current = m.group(1) if row in comments else None
            if current:
                out[current] = comments[row]
        elif current and line.strip().startswith("#"):
            out[current] += " " + comments[row]
        else:
            current = None
    return out


def flat_items(cfg: ExperimentConfig) -> list[tuple[str, Any]]:
    """``[(dotted field, value)]`` of every leaf field of ``cfg``."""
    out: list[tuple[str, Any]] = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.name in SUBCONFIGS:
            out += [(f"{f.name}.{g.name}", getattr(v, g.name)) for g in fields(v)]
        else:
            out.append((f.name, v))
    return out


__all__ = ["ModelConfig", "MetaConfig", "AdaptConfig", "ExperimentConfig", "ConfigError", "MODELS", "ADAPTATION_MODES",
           "BASELINES", "INNER_PARAMS", "OUTER_OPTIMIZERS", "ACTIVATIONS", "METHODS", "EVAL_MODES", "DEFAULT_INNER_LR",
           "SSM_R_MAX", "build_experiment_config", "check_field", "derive", "field_choices", "field_comments",
           "field_types", "flat_items", "replace", "FOLLOWS", "IN_CONTEXT_DEFAULTS", "IN_CONTEXT_OUTER_LR"]


# ---- defaults that depend on other fields (applied by derive() to the fields left unset) -------------------
# fields that take another field's value
FOLLOWS = {"adapt.adapt_lr": "meta.inner_lr", "adapt.episodes_per_step": "meta.episodes_per_task",
           "adapt.baseline": "meta.baseline", "adapt.adapt_params": "meta.inner_params",
           "adapt.batch_unit": "meta.batch_unit"}
# meta.method "in-context": recurrent PPO over 2-episode trials (VariBAD-like) ...
IN_CONTEXT_DEFAULTS = {"meta.outer_lr": 1e-3, "meta.outer_steps": 4, "meta.value_coef": 0.5,
                       "meta.episodes_per_task": 4, "meta.episodes_per_trial": 2, "meta.gae_lambda": 0.95}
# ... whose Adam step size depends on the model: the SSM's PPO updates move its policy ~10x more per step
# (navigation-2d, benchmarks/README.md: 1e-3 -23.1 by episode 2, 1e-4 -16.1 / -17.2 over two seeds)
IN_CONTEXT_OUTER_LR = {"ssm": 1e-4}


def derive(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` (dotted field -> value: the fields set explicitly) plus the defaults that depend on other
    fields, for the fields it leaves unset: the in-context method's PPO settings
    (:data:`IN_CONTEXT_DEFAULTS`, outer step size per model), ``meta.inner_lr`` per model
    (:data:`DEFAULT_INNER_LR`), then the :data:`FOLLOWS` fields (``adapt.adapt_lr`` follows
    ``meta.inner_lr``, ...). The CLI and the sweeps both build their configs through it."""
    out = dict(flat)
    kind = out.get("model.kind", ModelConfig.kind)
    kind = kind if isinstance(kind, str) else ""  # a bad value is reported by validation, not here
    if out.get("meta.method") == "in-context":
        out = {**IN_CONTEXT_DEFAULTS, "meta.outer_lr": IN_CONTEXT_OUTER_LR.get(kind, 1e-3), **out}
    elif out.get("meta.method") == "in-context-maml":  # MetaMAML's settings, on trials of two episodes
        out = {"meta.episodes_per_trial": IN_CONTEXT_DEFAULTS["meta.episodes_per_trial"], **out}
    out.setdefault("meta.inner_lr", DEFAULT_INNER_LR.get(kind, MetaConfig.inner_lr))
    for name, source in FOLLOWS.items():
        if name not in out and source in out:
            out[name] = out[source]
    return out


def build_experiment_config(*layers: dict[str, Any]) -> ExperimentConfig:
    """ExperimentConfig from dotted overrides (later layers win: a sweep trial's base, then its sampled
    params; a preset, then the CLI flags given) over the defaults, :func:`derive`d, then validated
    (``ConfigError``)."""
    flat = derive({k: v for layer in layers for k, v in layer.items()})
    nested: dict[str, Any] = {}
    for k, v in flat.items():
        top, _, sub = k.partition(".")
        if sub:
            nested.setdefault(top, {})[sub] = v
        else:
            nested[k] = v
    return ExperimentConfig.from_dict(nested)
