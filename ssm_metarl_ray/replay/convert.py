"""Conversions between episode batches, ExperienceBuffer blocks and policy inputs."""

from __future__ import annotations

import numpy as np
import torch

from ssm_metarl_ray.types import EpisodeBatch, TorchEpisodes


def episodes_to_block(batch: EpisodeBatch, first_episode_id: int) -> dict[str, np.ndarray]:
    """Flatten the real steps of a padded (K, T) batch into one time-ordered block of transitions."""
    m = batch.mask.astype(bool)  # (K, T)
    K, T = m.shape
    ep_ids = np.broadcast_to(np.arange(first_episode_id, first_episode_id + K)[:, None], (K, T))
    steps = np.broadcast_to(np.arange(T, dtype=np.int32)[None, :], (K, T))
    return {"obs": batch.obs[m], "actions": batch.actions[m], "rewards": batch.rewards[m],
            "dones": batch.dones[m].astype(bool), "logp": batch.logp[m], "advantages": batch.advantages[m],
            "task_id": np.full(int(m.sum()), batch.task_index, np.int64), "episode_id": ep_ids[m].astype(np.int64),
            "step": steps[m]}


def policy_inputs(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
                  discrete: bool, act_dim: int) -> np.ndarray:
    """Rebuild the policy features the sampler fed the policy, from stored transitions.

    obs (B, L, O), actions (B, L, A|1), rewards (B, L), dones (B, L) -> (B, L, O + act_dim + 2):
    [obs_t, feature(a_{t-1}), r_{t-1}, done_t] with the previous-step terms zeroed where done_t = 1.
    Matches ``RolloutWorker._rollout`` (continuous actions enter clipped to [-1, 1]; discrete one-hot).
    """
    B, L = rewards.shape
    if discrete:
        a_feat = np.eye(act_dim, dtype=np.float32)[actions[..., 0].astype(np.int64)]
    else:
        a_feat = np.clip(actions, -1.0, 1.0).astype(np.float32)
    keep = (1.0 - dones.astype(np.float32))[..., None]  # (B, L, 1)
    prev_a = np.concatenate([np.zeros_like(a_feat[:, :1]), a_feat[:, :-1]], axis=1) * keep
    prev_r = np.concatenate([np.zeros_like(rewards[:, :1]), rewards[:, :-1]], axis=1) * keep[..., 0]
    return np.concatenate([obs, prev_a, prev_r[..., None], dones.astype(np.float32)[..., None]],
                          axis=-1).astype(np.float32)


def sequences_to_torch(seq: dict[str, np.ndarray], discrete: bool, act_dim: int,
                       trials: bool = False) -> TorchEpisodes:
    """ExperienceBuffer ``sample_sequences`` output -> tensors for the policy losses. ``trials``: the
    chunks are whole trials (``trial_start=True``): the recurrent state restarts only at a chunk's first
    step, the ``dones`` inside it stay policy inputs (as when the trial was collected)."""
    inputs = policy_inputs(seq["obs"], seq["actions"], seq["rewards"], seq["dones"], discrete, act_dim)
    mask = seq["mask"].astype(np.float32)
    f = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32))  # noqa: E731
    resets = None
    if trials:
        resets = np.zeros_like(mask)
        resets[:, 0] = 1.0
    return TorchEpisodes(inputs=f(inputs), actions=f(seq["actions"]), logp=f(seq["logp"]),
                         dones=f(seq["dones"]), mask=f(mask), advantages=f(seq["advantages"] * mask),
                         returns=torch.zeros_like(f(mask)), resets=None if resets is None else f(resets))
