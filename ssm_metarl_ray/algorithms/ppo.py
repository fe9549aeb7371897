"""In-context meta-RL learner: recurrent PPO over trials (RL^2 / VariBAD style, Lu et al. 2023 for SSMs).

A trial is N episodes of one task back to back; the policy's recurrent state carries across the episode
boundaries, so a policy that reads the previous reward and action can adapt *within* the trial, with no
gradient step at test time. Training is plain PPO on whole trial sequences (the SSM runs its scan over
the trial): GAE over the trial with the critic's values (episode boundaries inside a trial are not
terminal: the trial is the agent's episode), normalised advantages, ``outer_steps`` epochs of
``ppo_minibatches`` minibatches of trials, clipped surrogate + value loss - entropy bonus, Adam.
With ``normalize_rewards`` the rewards are divided by the running std of the discounted return (the critic
learns values in those units: one learning rate fits navigation's returns of ~-20 and the cheetah's ~300).
The critic's gradient is clipped on its own when it reads detached features, so a large value error never
shrinks the policy's step. With ``task_inference_coef`` > 0 a linear head (the learner's, not the policy's)
predicts the task's parameters from the core's output at every step and its squared error joins the loss
(belief supervision, Humplik et al. 2019): the core is pushed to carry what the trial so far says about the
task, so the actor can condition on it; no task label is used at test time.

``PPOLearner`` has :class:`~ssm_metarl_ray.algorithms.maml.MetaLearner`'s surface (``update``,
``get_weights``, ``state_dict``, ``load_state_dict``, ``version``), so the training loop, the Ray runtime
and checkpoints run it unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssm_metarl_ray.algorithms.losses import approx_kl, clipped_surrogate, masked_mean, value_loss
from ssm_metarl_ray.algorithms.maml import group_norms, policy_params, run_policy
from ssm_metarl_ray.algorithms.returns import (
    discounted_returns,
    gae,
    merge_moments,
    normalize_advantages,
    trial_episode_returns,
)
from ssm_metarl_ray.config import MetaConfig
from ssm_metarl_ray.models.policy import Policy, entropy, log_prob
from ssm_metarl_ray.types import EpisodeBatch, TaskBatch, TorchEpisodes


def stack_trials(batches: list[TaskBatch]) -> EpisodeBatch:
    """All trials of a meta-batch as one EpisodeBatch (rows of every task's post batch)."""
    eps = [b.post for b in batches]
    keys = ("inputs", "obs", "actions", "rewards", "logp", "dones", "mask", "advantages", "returns")
    arrays: dict[str, Any] = {k: np.concatenate([getattr(e, k) for e in eps]) for k in keys}
    out = EpisodeBatch(**arrays)
    out.resets = np.concatenate([e.core_resets for e in eps])
    return out


RECURRENCE_PARAMS = ("nu_log", "theta_log", "gamma_log", "B")  # an LRU layer's lambda, gamma and B


def param_groups(policy: Policy, lr: float, recurrent_scale: float) -> list[dict[str, Any]]:
    """Adam groups: the SSM's recurrence parameters at ``lr * recurrent_scale``, the rest at ``lr``."""
    groups: dict[bool, list[torch.nn.Parameter]] = {False: [], True: []}
    for n, p in policy.named_parameters():
        groups[recurrent_scale != 1.0 and n.rsplit(".", 1)[-1] in RECURRENCE_PARAMS].append(p)
    return [{"params": ps, "lr": lr * (recurrent_scale if slow else 1.0)} for slow, ps in groups.items() if ps]


def task_targets(batches: list[TaskBatch]) -> np.ndarray:
    """Per trial row, its task's parameter vector: (K, task_dim), rows in ``stack_trials`` order."""
    return np.concatenate([np.tile(np.asarray(b.task_params, np.float32), (b.post.rewards.shape[0], 1))
                           for b in batches])


def task_inference_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error of the per-step task prediction, summed over parameters, masked mean over steps.
    pred (K, L, D), target (K, D), mask (K, L) -> scalar."""
    return masked_mean((pred - target[:, None, :]).pow(2).sum(-1), mask)


def trial_advantages(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float,
                     lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over whole trials and the value targets: rewards, values, mask (K, L) -> (advantages, returns)."""
    adv = gae(rewards, values, mask, gamma, lam)
    return adv, (adv + values) * mask


class PPOLearner:
    """``update(task_batches) -> metrics`` for ``meta.method == "in-context"``; owns policy and Adam."""

    def __init__(self, policy: Policy, cfg: MetaConfig, seed: int = 0, total_updates: int | None = None,
                 task_dim: int = 0):
        if cfg.anneal_lr and not total_updates:
            raise ValueError(f"anneal_lr needs the run's number of updates, got total_updates={total_updates!r}")
        if cfg.task_inference_coef and task_dim < 1:
            raise ValueError(f"task_inference_coef needs the family's number of task parameters, got {task_dim}")
        self.policy, self.cfg, self.total_updates = policy, cfg, total_updates
        groups = param_groups(policy, cfg.outer_lr, cfg.recurrent_lr_scale)
        self.task_head: torch.nn.Linear | None = None
        if cfg.task_inference_coef:
            self.task_head = torch.nn.Linear(policy.core.output_dim, task_dim)
            groups.append({"params": list(self.task_head.parameters()), "lr": cfg.outer_lr})
        self.optimizer = torch.optim.Adam(groups)
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # gradient clipping groups: the critic alone when it cannot move the core, everything else together
        apart: dict[bool, list[torch.nn.Parameter]] = {False: [], True: []}
        for n, p in policy.named_parameters():
            apart[policy.cfg.critic_detached and n.startswith("critic.")].append(p)
        if self.task_head is not None:
            apart[False].extend(self.task_head.parameters())
        self._clip_groups = [g for g in apart.values() if g]
        self.version, self.seed = 0, seed
        self.return_moments = (0.0, 0.0, 1.0)  # running (count, mean, var) of the discounted return

    def lr_fraction(self) -> float:
        """Step size of this update relative to ``outer_lr``: 1, or with ``anneal_lr`` 1 - version / total
        (CleanRL's linear schedule; a function of the version, so a resumed run continues it exactly)."""
        if not self.cfg.anneal_lr or not self.total_updates:
            return 1.0
        return max(0.0, 1.0 - self.version / self.total_updates)

    def update(self, batches: list[TaskBatch]) -> dict[str, float]:
        frac = self.lr_fraction()
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * frac
        data = stack_trials(batches)
        ep = self._prepare(data)
        targets = torch.as_tensor(task_targets(batches)) if self.task_head is not None else None
        logs: dict[str, list[float]] = {"surrogate": [], "value_loss": [], "entropy": [], "kl": [],
                                        "clip_frac": [], "grad_norm": []}
        if targets is not None:
            logs["task_inference_loss"] = []
        grads = []
        k = data.rewards.shape[0]
        rng = np.random.default_rng([self.seed, self.version])  # minibatch order: a function of the version,
        for _ in range(self.cfg.outer_steps):                    # so a resumed run repeats it exactly
            for rows in np.array_split(rng.permutation(k), min(self.cfg.ppo_minibatches, k)):
                idx = torch.as_tensor(rows)
                info, g = self._minibatch_step(_rows(ep, idx), None if targets is None else targets[idx])
                for key, v in info.items():
                    logs[key].append(v)
                grads.append(g)
        self.version += 1
        per_episode = trial_episode_returns(data.rewards, data.dones, data.mask, self.cfg.episodes_per_trial)
        out = {f"meta/{key}": float(np.mean(v)) for key, v in logs.items()}
        out.update({"meta/lr": self.cfg.outer_lr * frac,
                    "meta/pre_return": float(np.nanmean(per_episode[:, 0])),  # episode 1 of each trial
                    "meta/post_return": float(np.nanmean(per_episode[:, -1])),  # episode N
                    **{f"grad/{key}": float(np.mean([g[key] for g in grads if key in g]))
                       for key in sorted({key for g in grads for key in g})}})
        return out

    def reward_scale(self, data: EpisodeBatch) -> float:
        """1 / running std of the discounted return after merging this batch's (1 without
        ``normalize_rewards``)."""
        if not self.cfg.normalize_rewards:
            return 1.0
        returns = discounted_returns(data.rewards, data.mask, self.cfg.gamma)  # (K, L)
        self.return_moments = merge_moments(*self.return_moments, returns[data.mask > 0])
        return 1.0 / (float(np.sqrt(self.return_moments[2])) + 1e-8)

    def _prepare(self, data: EpisodeBatch) -> TorchEpisodes:
        """Torch view of the trials with GAE advantages (normalised) and value targets from the critic."""
        ep = data.to_torch()
        with torch.no_grad():
            values = run_policy(self.policy, policy_params(self.policy), ep).value.numpy()  # (K, L)
        rewards = data.rewards * self.reward_scale(data)
        adv, ret = trial_advantages(rewards, values, data.mask, self.cfg.gamma, self.cfg.gae_lambda)
        ep.advantages = torch.as_tensor(normalize_advantages(adv, data.mask), dtype=torch.float32)
        ep.returns = torch.as_tensor(ret, dtype=torch.float32)
        return ep

    def _minibatch_step(self, ep: TorchEpisodes,
                        targets: torch.Tensor | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """One Adam step on a minibatch of trials; ``targets`` (B, task_dim): task parameters of the
        task-inference loss (with ``task_inference_coef``)."""
        cfg, policy = self.cfg, self.policy
        out, features, _ = policy.forward_with_features(ep.inputs, policy.initial_state(ep.inputs.shape[0]),
                                                        ep.core_resets)
        logp = log_prob(out.dist_params, ep.actions, policy.discrete)  # (B, L)
        surrogate = clipped_surrogate(logp, ep.logp, ep.advantages, ep.mask, cfg.clip_eps)
        v_loss = value_loss(out.value, ep.returns, ep.mask)
        ent = masked_mean(entropy(out.dist_params, policy.discrete), ep.mask)
        loss = surrogate + cfg.value_coef * v_loss - cfg.entropy_coef * ent
        extra: dict[str, float] = {}
        if self.task_head is not None and targets is not None:
            t_loss = task_inference_loss(self.task_head(features), targets, ep.mask)
            loss = loss + cfg.task_inference_coef * t_loss
            extra["task_inference_loss"] = float(t_loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        g = group_norms({n: p.grad for n, p in policy.named_parameters()})
        gn = torch.tensor(0.0)
        for group in self._clip_groups:
            gn = torch.hypot(gn, torch.nn.utils.clip_grad_norm_(group, cfg.max_grad_norm))
        self.optimizer.step()
        with torch.no_grad():
            ratio = torch.exp(logp - ep.logp)
            clipped = masked_mean(((ratio - 1.0).abs() > cfg.clip_eps).float(), ep.mask)
        surrogate, v_loss, ent = surrogate.detach(), v_loss.detach(), ent.detach()
        return ({"surrogate": float(surrogate), "value_loss": float(v_loss), "entropy": float(ent),
                 "kl": float(approx_kl(logp.detach(), ep.logp, ep.mask)), "clip_frac": float(clipped),
                 "grad_norm": float(gn), **extra}, g)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict:
        out = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
               "version": self.version, "return_moments": list(self.return_moments)}
        if self.task_head is not None:
            out["task_head"] = self.task_head.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.task_head is not None:
            self.task_head.load_state_dict(state["task_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        count, mean, var = (float(x) for x in state.get("return_moments", (0.0, 0.0, 1.0)))
        self.return_moments = (count, mean, var)


def _rows(ep: TorchEpisodes, rows: torch.Tensor) -> TorchEpisodes:
    """The trials ``rows`` of ``ep``."""
    return TorchEpisodes(**{f: getattr(ep, f)[rows] for f in ("inputs", "actions", "logp", "dones", "mask",
                                                              "advantages", "returns", "resets")})
