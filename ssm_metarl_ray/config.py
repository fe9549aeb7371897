"""Typed configuration: one frozen dataclass per concern, grouped in :class:`ExperimentConfig`.

Every field has a comment saying what it controls; the CLI maps its flags onto these fields and
checkpoints store ``asdict(config)`` (plain JSON, never pickle).
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "ssm"  # one of MODELS
    hidden_size: int = 64  # width H of the core and of the encoder output
    num_layers: int = 2  # stacked layers of the core (SSM layers, RNN layers, Transformer blocks)
    state_size: int = 32  # SSM: complex modes per layer (P); ignored by the other models
    num_heads: int = 2  # Transformer: attention heads
    context_len: int = 64  # Transformer: attention window (steps within the current episode)
    observation_only: bool = False  # feed the core the observation only, not the previous action, reward
    #   and done flag (MAML 2017's feed-forward policy; a recurrent core then cannot adapt in context)
    activation: str = "tanh"  # MLP: hidden activation, "tanh" or "relu" (MAML 2017: relu, 100x100)
    init_log_std: float = 0.0  # Gaussian policies: initial log standard deviation
    head_init_gain: float = 1.0  # orthogonal-init gain of the actor head (1: like the other layers, as the
    #   MAML/ProMP references; 0.01 made one adaptation step move the mean action by ~0.007 std)
    critic_detached: bool = True  # the critic head reads detached core features: value regression can
    #   never drag the shared core (and with it the meta-gradient)


@dataclass(frozen=True)
class MetaConfig:
    meta_batch_size: int = 10  # tasks per meta-iteration
    episodes_per_task: int = 10  # K trajectories per task for the inner update and for the outer loss
    inner_lr: float = 0.02  # step size of the inner policy-gradient update (CLI: DEFAULT_INNER_LR per model)
    inner_steps: int = 1  # inner updates per task during meta-training
    first_order: bool = False  # drop second-order terms of the meta-gradient
    outer_lr: float = 3e-3  # Adam step size of the meta-update
    outer_steps: int = 2  # clipped-surrogate optimisation steps per meta-iteration (ProMP style)
    clip_eps: float = 0.2  # surrogate clipping range
    gamma: float = 0.99  # discount
    gae_lambda: float = 1.0  # GAE lambda (1.0 = Monte-Carlo returns minus baseline, as MAML)
    baseline: str = "fit"  # inner-loop advantages: "fit" (linear baseline fitted on the same batch, ProMP)
    #   or "lagged" (rllab/MAML 2017: predicted by the fit on the task's previous batch, 0 for the first)
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


@dataclass(frozen=True)
class AdaptConfig:
    adaptation_mode: str = "standard"  # "standard" or "hybrid"
    adapt_lr: float = 0.02  # step size of each test-time policy-gradient step
    adapt_steps: int = 3  # test-time gradient steps (returns are reported after each)
    adapt_lr_decay: float = 0.5  # step s uses adapt_lr * adapt_lr_decay**s (MAML 2017 halves later steps)
    episodes_per_step: int = 10  # fresh trajectories per adaptation step
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
    seed: int = 0
    output_dir: str = "runs/latest"
    num_threads: int = 0  # torch intra-op threads (0: leave torch's default)
    model: ModelConfig = field(default_factory=ModelConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """Rebuild from ``to_dict`` output; unknown keys raise ``ValueError`` naming them."""
        sub = {"model": ModelConfig, "meta": MetaConfig, "adapt": AdaptConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        for k, v in d.items():
            if k not in known:
                raise ValueError(f"unknown config key {k!r}; allowed: {sorted(known)}")
            if k in sub:
                sub_known = {f.name for f in fields(sub[k])}
                bad = set(v) - sub_known
                if bad:
                    raise ValueError(f"unknown {k} config key(s) {sorted(bad)}; allowed: {sorted(sub_known)}")
                kwargs[k] = sub[k](**v)
            else:
                kwargs[k] = v
        return cls(**kwargs)


__all__ = ["ModelConfig", "MetaConfig", "AdaptConfig", "ExperimentConfig", "MODELS", "ADAPTATION_MODES", "BASELINES", "OUTER_OPTIMIZERS", "DEFAULT_INNER_LR",
           "replace"]
