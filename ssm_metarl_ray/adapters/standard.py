"""StandardAdapter: test-time adaptation from the current task's fresh trajectories only.

Each step samples ``episodes_per_step`` trajectories with the current (adapted) parameters and takes
one clipped policy-gradient step on a *copy* of the meta-parameters; the meta-trained policy is never
modified. The return of the trajectories sampled before each step is recorded, so ``returns[s]`` is
the mean return after ``s`` adaptation steps (``returns[0]``: before adaptation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ssm_metarl_ray.algorithms.maml import Params, inner_loss, policy_params, sgd_step
from ssm_metarl_ray.config import AdaptConfig
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.models.policy import Policy
from ssm_metarl_ray.rollout.worker import lagged_advantages
from ssm_metarl_ray.types import EpisodeBatch


def adapt_lr_at(cfg: AdaptConfig, s: int) -> float:
    """Step size of test-time step ``s`` (0-based) under ``cfg.adapt_lr_schedule``."""
    if cfg.adapt_lr_schedule == "first":  # rllab: init_learning_rate once, then the optimiser's own rate
        return cfg.adapt_lr * (cfg.adapt_lr_decay if s > 0 else 1.0)
    return cfg.adapt_lr * cfg.adapt_lr_decay**s


@dataclass
class AdaptResult:
    task_index: int
    returns: list[float]  # mean episode return after 0, 1, ..., adapt_steps steps
    env_steps: int
    params: Params


class StandardAdapter:
    mode = "standard"

    def __init__(self, policy: Policy, cfg: AdaptConfig):
        self.policy, self.cfg = policy, cfg

    def loss(self, params: Params, batch: EpisodeBatch) -> Tensor:
        """Current-task loss: the same policy-gradient objective as the MAML inner loop."""
        return inner_loss(self.policy, params, batch.to_torch())

    def observe(self, batch: EpisodeBatch) -> None:
        """Hook for adapters that keep experience (the standard adapter keeps none)."""

    def begin_task(self, task: Task) -> None:
        self.task = task

    def adapt(self, sampler, task: Task, params: Params | None = None) -> AdaptResult:
        """``sampler`` is anything with ``sample(task, n, params) -> EpisodeBatch`` (a RolloutWorker)."""
        if params is None:
            params = policy_params(self.policy)
        params = {k: v.detach().clone() for k, v in params.items()}
        self.begin_task(task)
        returns, steps, coef = [], 0, None
        for s in range(self.cfg.adapt_steps + 1):
            batch = sampler.sample(task, self.cfg.episodes_per_step, params)
            if self.cfg.baseline == "lagged":  # upstream rllab: predict with the previous step's fit, then refit
                coef = lagged_advantages(batch, coef, sampler.meta_cfg.gamma, sampler.meta_cfg.gae_lambda)
            returns.append(batch.mean_episode_return)  # per episode, also when rows are trials
            steps += batch.num_steps
            if s < self.cfg.adapt_steps:
                params = self.step(params, batch, adapt_lr_at(self.cfg, s), s)
            self.observe(batch)
        return AdaptResult(task.index, returns, steps, params)

    def step(self, params: Params, batch: EpisodeBatch, lr: float, s: int = 0) -> Params:
        """Test-time step number ``s`` (0-based) at step size ``lr``."""
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        new = sgd_step(params, self.loss(params, batch), lr, create_graph=False, max_grad_norm=self.cfg.grad_clip,
                       which=self.cfg.adapt_params, step=s)
        return {k: v.detach() for k, v in new.items()}
