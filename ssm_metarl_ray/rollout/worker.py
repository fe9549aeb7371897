"""RolloutWorker: steps a batch of task envs with batched recurrent-policy inference (plain class).

``sample(task, n, params)`` collects ``n`` episodes of one task, padded to the horizon, and fills in
advantages; ``sample_task(task)`` collects what MetaMAML needs for one task: pre-adaptation episodes,
a local (first-order, no graph) inner update per inner step, and post-adaptation episodes; the adapted
policies of all tasks of a call step together (``models/grouped_step.GroupedPolicy``).
The Ray runtime wraps this class as an actor without changing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ssm_metarl_ray.algorithms.maml import Params, inner_update, policy_params
from ssm_metarl_ray.algorithms.returns import (
    discounted_returns,
    fit_linear_baseline,
    gae,
    linear_baseline,
    normalize_advantages,
    predict_linear_baseline,
)
from ssm_metarl_ray.config import MetaConfig, ModelConfig
from ssm_metarl_ray.envs import Task, make_env
from ssm_metarl_ray.envs.base import task_vector
from ssm_metarl_ray.models.base import fill_policy_inputs
from ssm_metarl_ray.models.grouped_step import GroupedPolicy
from ssm_metarl_ray.models.packed_step import PackedStep
from ssm_metarl_ray.models.policy import Policy
from ssm_metarl_ray.types import EnvSpec, EpisodeBatch, TaskBatch


def process_episodes(batch: EpisodeBatch, gamma: float, lam: float,
                     values: np.ndarray | None = None) -> EpisodeBatch:
    """Fill returns and normalised GAE advantages; ``values`` (K, T): the baseline's predictions
    (default: the linear feature baseline fitted on this batch)."""
    batch.returns = discounted_returns(batch.rewards, batch.mask, gamma).astype(np.float32)
    if values is None:
        values = linear_baseline(batch.obs, batch.returns, batch.mask)
    adv = gae(batch.rewards, values, batch.mask, gamma, lam)
    batch.advantages = normalize_advantages(adv, batch.mask).astype(np.float32)
    return batch


def lagged_advantages(batch: EpisodeBatch, coef: np.ndarray | None, gamma: float, lam: float) -> np.ndarray:
    """rllab's order (MAML 2017): recompute ``batch``'s advantages with the linear baseline fitted on the
    *previous* batch of this task (``coef``; None: never fitted, predicts 0), then fit it on ``batch``;
    returns the new coefficients for the next batch."""
    process_episodes(batch, gamma, lam, predict_linear_baseline(batch.obs, batch.mask, coef))
    return fit_linear_baseline(batch.obs, batch.returns, batch.mask)


def sample_action(dist_params: torch.Tensor, discrete: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sample actions (k, act_dim) [discrete: (k,) indices] and their log-probs (k,) as numpy arrays,
    without Distribution objects (rollout hot path). Gaussian: ``a = mean + std * eps`` with ``eps`` from
    torch's generator, and ``log p(a) = sum(-eps^2 / 2 - log_std) - act_dim log(2 pi) / 2``, which is
    ``policy.log_prob(dist_params, a)`` with ``(a - mean) / std`` written as ``eps``."""
    if discrete:
        logits = torch.log_softmax(dist_params, dim=-1)  # (k, n)
        a = torch.multinomial(logits.exp(), 1)[:, 0]
        return a.numpy(), logits.gather(-1, a[:, None])[:, 0].numpy()
    dp = dist_params.numpy()
    A = dp.shape[-1] // 2
    mean, log_std = dp[:, :A], dp[:, A:]
    eps = torch.randn(mean.shape).numpy()  # the draws of torch.randn_like(mean)
    a = mean + np.exp(log_std) * eps
    return a, (-0.5 * eps * eps - log_std).sum(-1) - np.float32(0.5 * A * math.log(2 * math.pi))


class RolloutWorker:
    def __init__(self, env_name: str, model_cfg: ModelConfig, meta_cfg: MetaConfig, num_envs: int = 20,
                 seed: int = 0):
        self.env_name = env_name
        self.envs = [make_env(env_name) for _ in range(max(1, num_envs))]  # grows on demand
        self.spec = EnvSpec.of(self.envs[0])
        self.meta_cfg = meta_cfg
        self.policy = self.spec.make_policy(model_cfg)
        self._scratch = self.spec.make_policy(model_cfg)  # holds substituted (adapted) parameters
        self.rng = np.random.default_rng(seed)
        self.version = -1

    # ---- weights ------------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        if version <= self.version:
            return  # stale broadcast
        self.policy.load_state_dict({k: torch.tensor(np.array(v)) for k, v in weights.items()})
        self.version = version

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.policy.state_dict().items()}

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, task: Task, num_episodes: int, params: Params | None = None) -> EpisodeBatch:
        return self.sample_many([task], num_episodes, params)[0]

    @torch.no_grad()
    def sample_many(self, tasks: list[Task], num_episodes: int, params: Params | None = None) -> list[EpisodeBatch]:
        """``num_episodes`` episodes of every task in ONE batched rollout (same parameters for all rows)."""
        return self._sample_rows(lambda idx: self._policy_with(params), tasks, num_episodes)

    @torch.no_grad()
    def sample_adapted(self, tasks: list[Task], num_episodes: int, params: list[Params]) -> list[EpisodeBatch]:
        """``num_episodes`` episodes of every task in ONE batched rollout, task i's rows with ``params[i]``
        (its adapted policy): one policy call per env step for all tasks (``GroupedPolicy``)."""
        return self._sample_rows(lambda idx: GroupedPolicy(self.policy, [params[i] for i in idx]), tasks,
                                 num_episodes)

    def _sample_rows(self, policy_for: Callable[[list[int]], Policy | GroupedPolicy], tasks: list[Task],
                     num_episodes: int) -> list[EpisodeBatch]:
        """``policy_for(idx)``: the policy that steps ``tasks[i] for i in idx`` (rows grouped by task).
        ``meta_cfg.batch_unit`` "steps": each task's batch is then topped up to rllab's batch size."""
        parts = self._task_rows(policy_for(list(range(len(tasks)))), tasks, num_episodes)
        if self.meta_cfg.batch_unit == "steps":
            parts = self._top_up(policy_for, tasks, parts, num_episodes * self.spec.horizon)
        out = []
        for task, part in zip(tasks, parts):
            batch = EpisodeBatch(**part, task_index=task.index, weights_version=self.version)
            out.append(process_episodes(batch, self.meta_cfg.gamma, self.meta_cfg.gae_lambda))
        return out

    def _task_rows(self, policy: Policy | GroupedPolicy, tasks: list[Task], num_episodes: int
                   ) -> list[dict[str, np.ndarray]]:
        """One batched rollout of ``num_episodes`` rows per task; the rows of each task, in task order."""
        rows = [t for t in tasks for _ in range(num_episodes)]
        while len(self.envs) < len(rows):
            self.envs.append(make_env(self.env_name))
        buf = self._rollout(policy, rows, self.meta_cfg.episodes_per_row)  # in-context-maml: rows are trials
        return [{k: v[i * num_episodes:(i + 1) * num_episodes] for k, v in buf.items()} for i in range(len(tasks))]

    def _top_up(self, policy_for: Callable[[list[int]], Policy | GroupedPolicy], tasks: list[Task],
                parts: list[dict[str, np.ndarray]], min_steps: int) -> list[dict[str, np.ndarray]]:
        """rllab's ``batch_size`` (MAML 2017's samplers): whole episodes until each task's rows hold at least
        ``min_steps`` env steps. A task ``d`` steps short gets ``ceil(d / horizon)`` more episodes per round:
        fewer cannot reach ``min_steps``, so collecting one episode at a time would take all of them too,
        and the rounds end where that would. The rows of one rollout are i.i.d. draws of the task's episode,
        so a task needing fewer than the round's rows keeps its first ones (the rest are dropped unseen)."""
        horizon = self.spec.horizon
        while True:
            need = [max(0, math.ceil((min_steps - int(p["mask"].sum())) / horizon)) for p in parts]
            short = [i for i, n in enumerate(need) if n > 0]
            if not short:
                return parts
            more = self._task_rows(policy_for(short), [tasks[i] for i in short], max(need[i] for i in short))
            for i, m in zip(short, more):
                parts[i] = {k: np.concatenate([parts[i][k], v[:need[i]]]) for k, v in m.items()}

    @torch.no_grad()
    def sample_trials(self, tasks: list[Task], num_trials: int, episodes_per_trial: int,
                      params: Params | None = None) -> list[EpisodeBatch]:
        """``num_trials`` trials of every task in one batched rollout: each row runs ``episodes_per_trial``
        episodes of its task back to back, the policy's recurrent state carried across the episode
        boundaries (``EpisodeBatch`` rows of length ``episodes_per_trial x horizon``; ``resets`` marks the
        trial start, ``dones`` every episode start). Returns are discounted over the whole trial;
        advantages are left to the learner (its critic)."""
        policy = self._policy_with(params)
        rows = [t for t in tasks for _ in range(num_trials)]
        while len(self.envs) < len(rows):
            self.envs.append(make_env(self.env_name))
        buf = self._rollout(policy, rows, episodes_per_trial)
        out = []
        for i, task in enumerate(tasks):
            part = {k: v[i * num_trials:(i + 1) * num_trials] for k, v in buf.items()}
            batch = EpisodeBatch(**part, task_index=task.index, weights_version=self.version)
            batch.returns = discounted_returns(batch.rewards, batch.mask, self.meta_cfg.gamma).astype(np.float32)
            out.append(batch)
        return out

    def _policy_with(self, params: Params | None) -> Policy:
        if params is None:
            return self.policy
        for name, p in self._scratch.named_parameters():
            p.copy_(params[name].detach())
        return self._scratch

    def _rollout(self, policy: Policy | GroupedPolicy, row_tasks: list[Task],
                 episodes_per_row: int = 1) -> dict[str, np.ndarray]:
        """Step len(row_tasks) envs in lockstep (row i runs row_tasks[i]) until every row has finished
        ``episodes_per_row`` episodes (a finished episode's env is reset at once, same task, and the next
        step is marked done; the recurrent state restarts only at t = 0)."""
        spec, k, n = self.spec, len(row_tasks), episodes_per_row
        L = n * spec.horizon
        envs = self.envs[:k]
        act_w = 1 if spec.discrete else spec.act_dim
        buf = {"inputs": np.zeros((k, L, spec.obs_dim + spec.act_dim + 2), np.float32),
               "obs": np.zeros((k, L, spec.obs_dim), np.float32), "actions": np.zeros((k, L, act_w), np.float32),
               "rewards": np.zeros((k, L), np.float32), "logp": np.zeros((k, L), np.float32),
               "dones": np.zeros((k, L), np.float32), "mask": np.zeros((k, L), np.float32),
               "advantages": np.zeros((k, L), np.float32), "returns": np.zeros((k, L), np.float32)}
        if n > 1:
            buf["resets"] = np.zeros((k, L), np.float32)
            buf["resets"][:, 0] = 1.0
        obs = np.zeros((k, spec.obs_dim), np.float32)
        for row, (env, task) in enumerate(zip(envs, row_tasks)):
            env.set_task(task)
            obs[row] = env.reset(seed=int(self.rng.integers(2**31)))[0]
        A, inputs = spec.act_dim, buf["inputs"]
        prev_a = np.zeros((k, A), np.float32)
        prev_r = np.zeros(k, np.float32)
        done = np.ones(k, np.float32)
        alive = np.ones(k, bool)
        left = np.full(k, n - 1)  # episodes still to start after the current one
        # one rollout, fixed weights: pack them once (models/packed_step.py)
        stepper = PackedStep(policy) if isinstance(policy, Policy) else policy
        state = stepper.initial_state(k)
        for t in range(L):
            x = fill_policy_inputs(inputs[:, t], obs, prev_a, prev_r, done)  # (k, D) view of the batch array
            # resets only at t = 0 (later episodes of a trial keep the state): None = no row done
            out, state = stepper.step(torch.from_numpy(x), state, torch.from_numpy(done) if t == 0 else None)
            a_np, logp = sample_action(out.dist_params, spec.discrete)
            buf["obs"][:, t], buf["logp"][:, t] = obs, logp
            buf["actions"][:, t] = a_np[:, None] if spec.discrete else a_np
            buf["dones"][:, t] = done
            buf["mask"][:, t] = alive
            rew = np.zeros(k, np.float32)
            if spec.discrete:
                env_a = a_np
                prev_a = np.eye(A, dtype=np.float32)[a_np]  # one-hot
            else:
                clipped = np.clip(a_np, -1.0, 1.0)
                env_a = spec.action_center + spec.action_scale * clipped
                prev_a = clipped.astype(np.float32)
            done = np.zeros(k, np.float32)
            for i in np.flatnonzero(alive):
                o, r, term, trunc, _ = envs[i].step(env_a[i])
                obs[i], rew[i] = o, r
                if term or trunc:
                    if left[i] > 0:  # next episode of the trial: same task, fresh start, state kept
                        left[i] -= 1
                        obs[i] = envs[i].reset(seed=int(self.rng.integers(2**31)))[0]
                        done[i] = 1.0
                    else:
                        alive[i] = False
            buf["rewards"][:, t] = rew * buf["mask"][:, t]
            prev_r = rew
            if n > 1 and done.any():  # an episode's first step sees no previous action / reward
                prev_a[done > 0] = 0.0
                prev_r = prev_r * (1.0 - done)
            if not alive.any():
                break
        return buf

    def sample_tasks(self, tasks: list[Task]) -> list[TaskBatch]:
        """MetaMAML data for several tasks: the first pre-adaptation batch of all tasks is collected in
        one batched rollout (they share the meta-parameters); adapted rollouts run per task."""
        cfg = self.meta_cfg
        if cfg.method == "in-context":  # trials; the learner computes advantages with its critic
            trials = self.sample_trials(tasks, cfg.episodes_per_task, cfg.episodes_per_trial)
            return [TaskBatch(t.index, [], b, task_vector(t)) for t, b in zip(tasks, trials)]
        if cfg.inner_steps == 0:  # multi-task pretraining: no adaptation, one batch per task
            return [TaskBatch(t.index, [], ep) for t, ep in zip(tasks, self.sample_many(tasks, cfg.episodes_per_task))]
        return self._adapt_and_sample(tasks, self.sample_many(tasks, cfg.episodes_per_task))

    def _adapt_and_sample(self, tasks: list[Task], firsts: list[EpisodeBatch]) -> list[TaskBatch]:
        """Per task: inner update(s) from its batch, then the next batch with the adapted parameters; the
        batches after an update are sampled for all tasks in one rollout (``sample_adapted``)."""
        cfg = self.meta_cfg
        meta = {k: v.detach() for k, v in policy_params(self.policy).items()}
        params: list[Params] = [meta] * len(tasks)
        pre: list[list[EpisodeBatch]] = [[] for _ in tasks]
        coefs: list[np.ndarray | None] = [None] * len(tasks)
        batches = firsts
        for i in range(cfg.inner_steps):
            if i > 0:
                batches = self.sample_adapted(tasks, cfg.episodes_per_task, params)
            for j, ep in enumerate(batches):
                if cfg.baseline == "lagged":
                    coefs[j] = lagged_advantages(ep, coefs[j], cfg.gamma, cfg.gae_lambda)
                pre[j].append(ep)
                params[j] = self._inner_step(params[j], ep, cfg.inner_lr * cfg.inner_lr_decay**i, i)
        posts = self.sample_adapted(tasks, cfg.episodes_per_task, params)
        if cfg.baseline == "lagged":
            for post, coef in zip(posts, coefs):
                lagged_advantages(post, coef, cfg.gamma, cfg.gae_lambda)
        return [TaskBatch(t.index, p, post) for t, p, post in zip(tasks, pre, posts)]

    def _inner_step(self, params: Params, ep: EpisodeBatch, lr: float, step: int) -> Params:
        """Inner update number ``step`` (0-based), local (first-order, no graph kept)."""
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        params = inner_update(self.policy, params, ep.to_torch(), lr, create_graph=False,
                              which=self.meta_cfg.inner_params, step=step)
        return {k: v.detach() for k, v in params.items()}

    def sample_task(self, task: Task) -> TaskBatch:
        """Pre-adaptation data, local inner update(s), post-adaptation data for one task."""
        return self.sample_tasks([task])[0]
