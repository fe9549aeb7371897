"""Records passed between roles: episode batches (numpy, picklable, Ray-friendly), task batches and the
env spec."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ssm_metarl_ray.config import ModelConfig
    from ssm_metarl_ray.models.policy import Policy


@dataclass
class EpisodeBatch:
    """K episodes of one task, padded to the horizon T; row k is one episode starting at t = 0.

    ``inputs`` are exactly the policy features the sampler fed the policy (obs, prev action, prev
    reward, done), so training replays the same sequences. ``mask`` is 1 on real steps, 0 on padding
    after termination. ``dones[:, 0] = 1`` (first step of each episode), elsewhere 0.

    Trials (in-context meta-RL): a row may instead hold a *trial*, N episodes of one task back to back
    (length up to N x horizon, padding only at the end); ``dones`` marks the first step of every episode
    (the policy sees it as an input) and ``resets`` (K, T) the steps where the recurrent state restarts:
    only the trial's first step. ``resets`` None means "same as ``dones``" (one episode per row).
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
    resets: np.ndarray | None = None  # (K, T) float32; None: dones (one episode per row)

    @property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, (K,)."""
        return (self.rewards * self.mask).sum(axis=1)

    @property
    def mean_episode_return(self) -> float:
        """Undiscounted return per episode over the batch: total reward / number of episodes (rows may
        hold trials of several episodes; ``dones`` marks each episode's first step)."""
        return float((self.rewards * self.mask).sum() / max((self.dones * self.mask).sum(), 1.0))

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())

    @property
    def core_resets(self) -> np.ndarray:
        """(K, T) state-reset flags: ``resets``, or ``dones`` for one episode per row."""
        return self.dones if self.resets is None else self.resets

    def to_torch(self, dtype: torch.dtype = torch.float32) -> TorchEpisodes:
        get = lambda name: self.core_resets if name == "resets" else getattr(self, name)  # noqa: E731
        return TorchEpisodes(**{f.name: torch.as_tensor(np.array(get(f.name)), dtype=dtype)
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
    resets: Tensor | None = None  # state resets; None: ``dones``

    @property
    def core_resets(self) -> Tensor:
        return self.dones if self.resets is None else self.resets


@dataclass
class TaskBatch:
    """MetaMAML data of one task: one pre-adaptation batch per inner step, then the post batch."""

    task_index: int
    pre: list[EpisodeBatch]
    post: EpisodeBatch
    task_params: tuple[float, ...] = ()  # the task's parameters, sorted by name (``task_vector``): the
    #   targets of the in-context learner's task-inference loss (``meta.task_inference_coef``)


@dataclass(frozen=True)
class EnvSpec:
    """What a policy and a buffer need to know about a task family's envs (all tasks share it)."""

    obs_dim: int
    act_dim: int  # discrete: number of actions (one-hot width of the prev-action feature)
    discrete: bool
    horizon: int
    action_center: np.ndarray | None  # continuous: env action = center + scale * clip(a, -1, 1)
    action_scale: np.ndarray | None
    task_dim: int = 0  # number of task parameters (``MetaEnv.task_params``)

    @classmethod
    def of(cls, env) -> EnvSpec:
        import gymnasium as gym

        obs_dim = int(np.prod(env.observation_space.shape))
        task_dim = len(getattr(env, "task_params", ()))
        if isinstance(env.action_space, gym.spaces.Discrete):
            return cls(obs_dim, int(env.action_space.n), True, int(env.horizon), None, None, task_dim)
        lo, hi = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
        return cls(obs_dim, int(lo.shape[0]), False, int(env.horizon), (hi + lo) / 2, (hi - lo) / 2, task_dim)

    def make_policy(self, cfg: ModelConfig) -> Policy:
        from ssm_metarl_ray.models.policy import Policy

        return Policy(self.obs_dim, self.act_dim, self.discrete, cfg)
