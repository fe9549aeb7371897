"""InContextAdapter: test-time adaptation without gradient steps, inside the policy's recurrent state.

Per held-out task it runs ``trials`` trials of ``episodes_per_trial`` episodes (the state carries across
the episodes of a trial) and reports the mean return of episode 1, 2, ..., N: ``returns[e]`` plays the
role ``returns[s]`` (after ``s`` gradient steps) plays for the gradient adapters.
"""

from __future__ import annotations

import numpy as np

from ssm_metarl_ray.adapters.standard import AdaptResult
from ssm_metarl_ray.algorithms.maml import Params, policy_params
from ssm_metarl_ray.algorithms.returns import trial_episode_returns
from ssm_metarl_ray.envs import Task
from ssm_metarl_ray.models.policy import Policy


class InContextAdapter:
    mode = "in-context"

    def __init__(self, policy: Policy, trials: int, episodes_per_trial: int):
        self.policy, self.trials, self.episodes_per_trial = policy, trials, episodes_per_trial

    def adapt(self, sampler, task: Task, params: Params | None = None) -> AdaptResult:
        """``sampler`` is anything with ``sample_trials(tasks, trials, episodes_per_trial, params)``."""
        params = {k: v.detach() for k, v in (params or policy_params(self.policy)).items()}
        batch = sampler.sample_trials([task], self.trials, self.episodes_per_trial, params)[0]
        per_episode = trial_episode_returns(batch.rewards, batch.dones, batch.mask, self.episodes_per_trial)
        returns = [float(x) for x in np.nanmean(per_episode, axis=0)]
        return AdaptResult(task.index, returns, batch.num_steps, params)
