"""The recurrent contract every sequence model (``core``) follows, and the policy input layout.

A core maps per-step features ``x_t`` (B, D_in) to ``y_t`` (B, H) with a state it carries:

* ``initial_state(batch_size) -> State``: the zero/empty state (a tensor or a tuple of tensors);
* ``step(x_t (B, D_in), state, done_t (B,) or None) -> (y_t (B, H), state)``: one O(1) step for
  rollouts; ``done_t = None`` says no row starts an episode at this step (the same as all zeros), so a
  rollout that knows it skips the reset check;
* ``forward_sequence(x (B, T, D_in), state, dones (B, T)) -> (y (B, T, H), state)`` for training.

Done convention (Lu et al. 2023): ``done_t = 1`` marks the **first step of a new episode**; the state
is reset to the initial state *before* step t is processed. Resets happen inside the core, so a batch
row may hold several episodes. ``forward_sequence`` must equal a loop of ``step`` (outputs, final
state and gradients), and must be differentiable twice (second-order MAML differentiates through it).
"""

from __future__ import annotations

from typing import Protocol, Union

import numpy as np
from torch import Tensor

State = Union[Tensor, tuple["State", ...]]  # noqa: UP007 (recursive alias: needs the string form)


class SequenceCore(Protocol):
    output_dim: int

    def initial_state(self, batch_size: int) -> State: ...

    def step(self, x_t: Tensor, state: State, done_t: Tensor | None) -> tuple[Tensor, State]: ...

    def forward_sequence(self, x: Tensor, state: State, dones: Tensor) -> tuple[Tensor, State]: ...


def fill_policy_inputs(out: np.ndarray, obs: np.ndarray, prev_action: np.ndarray, prev_reward: np.ndarray,
                       done: np.ndarray) -> np.ndarray:
    """Write what a recurrent policy sees at a step into ``out`` (..., obs_dim + act_dim + 2), in place, so
    it can infer the task in context: ``[obs (..., obs_dim), prev_action (..., act_dim) (one-hot for
    discrete actions), prev_reward (...), done (...)]``. At an episode's first step prev_action and
    prev_reward are zeros and done is 1. Returns ``out`` (a rollout passes a view of its batch array and
    hands ``torch.from_numpy(out)`` to the policy: no per-step concatenation)."""
    obs_dim, act_dim = obs.shape[-1], prev_action.shape[-1]
    out[..., :obs_dim], out[..., obs_dim:obs_dim + act_dim] = obs, prev_action
    out[..., -2], out[..., -1] = prev_reward, done
    return out


def reset_state(state: State, done_t: Tensor | None) -> State:
    """Zero every state tensor (leading dim B) where ``done_t`` (B,) is set; works on nested tuples.
    ``done_t = None``: no row is done, ``state`` comes back as it is."""
    if done_t is None:
        return state
    if isinstance(state, tuple):
        return tuple(reset_state(s, done_t) for s in state)
    keep = (1.0 - done_t.to(state.real.dtype if state.is_complex() else state.dtype))
    return state * keep.view(-1, *([1] * (state.dim() - 1)))
