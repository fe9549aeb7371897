"""Records passed between roles: episode batches (numpy, picklable, Ray-friendly) and task batches."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor


@dataclass
class EpisodeBatch:
    """K episodes of one task, padded to the horizon T; row k is one episode starting at t = 0.

    ``inputs`` are exactly the policy features the sampler fed the policy (obs, prev action, prev
    reward, done), so training replays the same sequences. ``mask`` is 1 on real steps, 0 on padding
    after termination. ``dones[:, 0] = 1`` (first step of each episode), elsewhere 0.
    """

    inputs: np.ndarray  # (K, T, D) float32
    obs: np.ndarray  # (K, T, obs_dim) float32
    actions: np.ndarray  # (K, T, act_dim) float32 (discrete: index in [..., 0])
    rewards: np.ndarray  # (K, T) float32
    logp: np.ndarray  # (K, T) float32 behaviour log-probabilities
    dones: np.ndarray  # (K, T) float32
    mask: np.ndarray  # (K, T) float32
    advantages: np.ndarray  # (K, T) float32 (filled by ``process_episodes``)
    returns: np.ndarray  # (K, T) float32 discounted reward-to-go
    task_index: int = -1
    weights_version: int = -1

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, (K,)."""
        return (self.rewards * self.mask).sum(axis=1)

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())

    def to_torch(self, dtype: torch.dtype = torch.float32) -> "TorchEpisodes":
        return TorchEpisodes(**{f.name: torch.as_tensor(np.array(getattr(self, f.name)), dtype=dtype)
                                for f in fields(TorchEpisodes)})


@dataclass
class TorchEpisodes:
    inputs: Tensor
    actions: Tensor
    logp: Tensor
    dones: Tensor
    mask: Tensor
    advantages: Tensor
    returns: Tensor


@dataclass
class TaskBatch:
    """MetaMAML data of one task: one pre-adaptation batch per inner step, then the post batch."""

    task_index: int
    pre: list[EpisodeBatch]
    post: EpisodeBatch
