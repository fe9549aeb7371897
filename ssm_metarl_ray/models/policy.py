"""Actor-critic policy: input features -> recurrent core -> action-distribution parameters and value.

The policy follows the same recurrent contract as its core (see ``models/base.py``):
``initial_state(B)``, ``step(inputs_t (B, D), state, done_t (B,)) -> (PolicyOutput (B, ...), state)``,
``forward_sequence(inputs (B, T, D), state, dones (B, T)) -> (PolicyOutput (B, T, ...), state)``.
``forward`` is ``forward_sequence`` so ``torch.func.functional_call(policy, params, ...)`` runs a
whole batch of sequences with substituted (e.g. MAML-adapted) parameters.

Outputs carry everything needed to build the distribution (Gaussian: mean and log-std broadcast to
the batch; categorical: logits), so a functional call fully determines the action distribution.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal

from ssm_metarl_ray.config import ModelConfig
from ssm_metarl_ray.models.base import SequenceCore, State
from ssm_metarl_ray.models.registry import make_core

GATE, GATE_DELTAS = "history_gate", "history_gate_deltas"  # ``model.history_gate``'s parameters
GATE_STEPS = 3  # meta-learned gate changes: one per inner step, the last reused for later steps


class PolicyOutput(NamedTuple):
    dist_params: Tensor  # (..., 2*act_dim) Gaussian [mean, log_std] | (..., n_actions) logits
    value: Tensor  # (...)


class Policy(nn.Module):
    """Recurrent actor-critic over ``fill_policy_inputs`` features (obs, prev action, prev reward, done)."""

    def __init__(self, obs_dim: int, act_dim: int, discrete: bool, cfg: ModelConfig):
        super().__init__()
        self.obs_dim, self.act_dim, self.discrete, self.cfg = obs_dim, act_dim, discrete, cfg
        self.input_dim = obs_dim + act_dim + 2
        # observation_only: the core sees the observation alone (MAML 2017's feed-forward policy);
        # history_only: the previous action, reward and done alone (the heads read the observation)
        self.core_input_dim = (obs_dim if cfg.observation_only else
                               self.input_dim - obs_dim if cfg.history_only else self.input_dim)
        self.core = cast(SequenceCore, make_core(cfg, self.core_input_dim))  # an nn.Module too
        h = self.core.output_dim + (obs_dim if cfg.head_obs else 0)  # the heads' input width
        actor, critic = _head_layers(h, act_dim, cfg.head_hidden), _head_layers(h, 1, cfg.head_hidden)
        _init_head(actor, cfg.head_init_gain)
        _init_head(critic, 1.0)
        self.actor, self.critic = _as_module(actor), _as_module(critic)
        if not discrete:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std)))
        if cfg.history_gate:  # the gate's value before adaptation and its change at each inner step
            self.history_gate = nn.Parameter(torch.ones(()))
            self.history_gate_deltas = nn.Parameter(torch.zeros(GATE_STEPS))

    # ---- recurrent contract -------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> State:
        return self.core.initial_state(batch_size)

    def step(self, inputs_t: Tensor, state: State, done_t: Tensor | None) -> tuple[PolicyOutput, State]:
        y, state = self.core.step(self.core_input(inputs_t), state, done_t)  # (B, H)
        return self._heads(self.head_input(self.gated(y), inputs_t)), state

    def forward_sequence(self, inputs: Tensor, state: State, dones: Tensor) -> tuple[PolicyOutput, State]:
        out, _, state = self.forward_with_features(inputs, state, dones)
        return out, state

    def forward_with_features(self, inputs: Tensor, state: State,
                              dones: Tensor) -> tuple[PolicyOutput, Tensor, State]:
        """``forward_sequence`` that also returns the core's output (B, T, H)."""
        y, state = self.core.forward_sequence(self.core_input(inputs), state, dones)  # (B, T, H)
        return self._heads(self.head_input(self.gated(y), inputs)), y, state

    def forward(self, inputs: Tensor, state: State, dones: Tensor) -> tuple[PolicyOutput, State]:
        return self.forward_sequence(inputs, state, dones)

    def core_input(self, inputs: Tensor) -> Tensor:
        """The core's input features (..., D) -> (..., core_input_dim): all of them, the observation only
        (``observation_only``) or the previous action, reward and done only (``history_only``)."""
        if self.cfg.observation_only:
            return inputs[..., :self.obs_dim]
        return inputs[..., self.obs_dim:] if self.cfg.history_only else inputs

    def gated(self, y: Tensor) -> Tensor:
        """The core's output (..., H) times ``history_gate`` (``model.history_gate``; else unchanged). The
        rollout steps fold the gate into the heads' first layer instead (``packed_step.pack_heads``)."""
        return y * self.history_gate if self.cfg.history_gate else y

    def head_input(self, y: Tensor, inputs: Tensor) -> Tensor:
        """The heads' input: the core's output y (..., H), with ``head_obs`` followed by the observation
        (the first ``obs_dim`` input features) -> (..., H [+ obs_dim])."""
        return torch.cat([y, inputs[..., :self.obs_dim]], -1) if self.cfg.head_obs else y

    def _heads(self, y: Tensor) -> PolicyOutput:
        out = self.actor(y)
        if not self.discrete:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return PolicyOutput(out, self.critic(y.detach() if self.cfg.critic_detached else y).squeeze(-1))

    # ---- distributions ------------------------------------------------------------------------
    def distribution(self, dist_params: Tensor) -> Distribution:
        return action_distribution(dist_params, self.discrete)


def _head_layers(in_dim: int, out_dim: int, hidden: int) -> list[nn.Linear]:
    """The linear layers of a head: one (``hidden == 0``) or two (Linear-tanh-Linear)."""
    if hidden == 0:
        return [nn.Linear(in_dim, out_dim)]
    return [nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)]


def _init_head(layers: list[nn.Linear], gain: float) -> None:
    """Orthogonal weights (the last layer with ``gain``, hidden ones sqrt(2)) and zero biases. Both heads
    are built before either is initialised, keeping the random stream of the linear-head policy."""
    for i, layer in enumerate(layers):
        nn.init.orthogonal_(layer.weight, gain=gain if i == len(layers) - 1 else math.sqrt(2.0))
        nn.init.zeros_(layer.bias)


def _as_module(layers: list[nn.Linear]) -> nn.Module:
    return layers[0] if len(layers) == 1 else nn.Sequential(layers[0], nn.Tanh(), layers[1])


def action_distribution(dist_params: Tensor, discrete: bool) -> Distribution:
    if discrete:
        return Categorical(logits=dist_params)
    mean, log_std = dist_params.chunk(2, dim=-1)
    return Normal(mean, log_std.exp())


def log_prob(dist_params: Tensor, actions: Tensor, discrete: bool) -> Tensor:
    """Log-probability of ``actions`` (..., act_dim) [discrete: (..., 1) index] -> (...)."""
    if discrete:
        return Categorical(logits=dist_params).log_prob(actions[..., 0].long())
    mean, log_std = dist_params.chunk(2, dim=-1)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def entropy(dist_params: Tensor, discrete: bool) -> Tensor:
    if discrete:
        return Categorical(logits=dist_params).entropy()
    _, log_std = dist_params.chunk(2, dim=-1)
    return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


def kl_divergence(p_params: Tensor, q_params: Tensor, discrete: bool) -> Tensor:
    """Analytic KL(p || q) between two action distributions given by their parameters (...) -> (...)."""
    if discrete:
        logp, logq = torch.log_softmax(p_params, -1), torch.log_softmax(q_params, -1)
        return (logp.exp() * (logp - logq)).sum(-1)
    mp, lsp = p_params.chunk(2, dim=-1)
    mq, lsq = q_params.chunk(2, dim=-1)
    var_p, var_q = torch.exp(2 * lsp), torch.exp(2 * lsq)
    return (lsq - lsp + (var_p + (mp - mq) ** 2) / (2 * var_q) - 0.5).sum(-1)
