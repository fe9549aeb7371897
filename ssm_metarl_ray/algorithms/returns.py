"""Returns, GAE and the linear feature baseline: pure functions over padded (K, T) episode arrays.

Each row is one episode starting at t = 0; ``mask`` (K, T) is 1 on real steps. Episodes end at the
horizon or at termination; nothing is bootstrapped past the last real step (fixed-horizon tasks,
as in MAML 2017). Each fast (vectorised) function has a slow loop reference tested against it.
"""

from __future__ import annotations

import numpy as np


def discounted_returns(rewards: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    """Reward-to-go G_t = sum_k gamma^k r_{t+k}; rewards, mask (K, T) -> (K, T)."""
    r = rewards * mask
    out = np.zeros_like(r)
    acc = np.zeros(r.shape[0], dtype=r.dtype)
    for t in range(r.shape[1] - 1, -1, -1):  # loop over T only; vectorised over K
        acc = r[:, t] + gamma * acc
        out[:, t] = acc
    return out * mask


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalised advantage estimates; rewards, values, mask (K, T) -> advantages (K, T).

    delta_t = r_t + gamma V_{t+1} m_{t+1} - V_t;  A_t = delta_t + gamma lam m_{t+1} A_{t+1}.
    """
    v = values * mask
    v_next = np.concatenate([v[:, 1:], np.zeros_like(v[:, :1])], axis=1)
    m_next = np.concatenate([mask[:, 1:], np.zeros_like(mask[:, :1])], axis=1)
    delta = (rewards + gamma * v_next - v) * mask
    adv = np.zeros_like(delta)
    acc = np.zeros(delta.shape[0], dtype=delta.dtype)
    for t in range(delta.shape[1] - 1, -1, -1):
        acc = delta[:, t] + gamma * lam * m_next[:, t] * acc
        adv[:, t] = acc
    return adv * mask


def gae_reference(rewards, values, mask, gamma, lam) -> np.ndarray:
    """Slow per-episode, per-step reference of :func:`gae` (tests only)."""
    K, T = rewards.shape
    adv = np.zeros((K, T), dtype=np.float64)
    for k in range(K):
        n = int(mask[k].sum())
        a = 0.0
        for t in reversed(range(n)):
            v_next = values[k, t + 1] if t + 1 < n else 0.0
            delta = rewards[k, t] + gamma * v_next - values[k, t]
            a = delta + gamma * lam * a
            adv[k, t] = a
    return adv


def baseline_features(obs: np.ndarray) -> np.ndarray:
    """rllab's LinearFeatureBaseline features per step: obs (K, T, D) -> (K, T, 2D + 4).

    [obs, obs^2, t/100, (t/100)^2, (t/100)^3, 1] with obs clipped to [-10, 10].
    """
    K, T, _ = obs.shape
    o = np.clip(obs, -10.0, 10.0).astype(np.float64)
    t = np.broadcast_to((np.arange(T, dtype=np.float64) / 100.0)[None, :, None], (K, T, 1))
    return np.concatenate([o, o * o, t, t**2, t**3, np.ones_like(t)], axis=-1)


def fit_linear_baseline(obs: np.ndarray, returns: np.ndarray, mask: np.ndarray, reg: float = 1e-5) -> np.ndarray:
    """Ridge least-squares coefficients (F,) of the linear feature baseline over the real (masked) steps."""
    feats = baseline_features(obs)  # (K, T, F)
    m = mask.astype(bool)
    X, y = feats[m], returns[m].astype(np.float64)  # (N, F), (N,)
    eye = np.eye(X.shape[1])
    for scale in (1.0, 10.0, 100.0, 1e3, 1e4):  # increase regularisation until solvable
        try:
            coef = np.linalg.solve(X.T @ X + reg * scale * eye, X.T @ y)
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(coef)):
            return coef
    return np.zeros(X.shape[1])


def predict_linear_baseline(obs: np.ndarray, mask: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
    """V (K, T) from coefficients of :func:`fit_linear_baseline`; None (never fitted) predicts 0."""
    if coef is None:
        return np.zeros(mask.shape, np.float32)
    return (baseline_features(obs) @ coef).astype(np.float32) * mask


def linear_baseline(obs: np.ndarray, returns: np.ndarray, mask: np.ndarray, reg: float = 1e-5) -> np.ndarray:
    """Fit the MAML/ProMP linear feature baseline to ``returns`` and predict V; obs (K, T, D) -> (K, T).

    The same batch is fitted and predicted (ProMP, pytorch-maml-rl, and MAML 2017's own rllab fork, whose
    ``BaseSampler.process_samples`` fits before it predicts). Upstream rllab predicts with the baseline
    fitted on the *previous* batch: :func:`fit_linear_baseline` + :func:`predict_linear_baseline`.
    """
    return predict_linear_baseline(obs, mask, fit_linear_baseline(obs, returns, mask, reg))


def normalize_advantages(adv: np.ndarray, mask: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Zero-mean, unit-std advantages over real steps (K, T) -> (K, T)."""
    m = mask.astype(bool)
    if m.sum() < 2:
        return adv * mask
    mu, sd = adv[m].mean(), adv[m].std()
    return ((adv - mu) / (sd + eps)) * mask


def trial_episode_returns(rewards: np.ndarray, dones: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Undiscounted return of each episode of each trial: rewards, dones, mask (K, L) -> (K, n).

    ``dones`` marks each episode's first step; episodes a trial did not reach (it hit its length
    limit) get NaN."""
    k = rewards.shape[0]
    idx = np.cumsum(dones, axis=1).astype(np.int64) - 1  # (K, L) episode index of each step
    out = np.zeros((k, n))
    rows = np.broadcast_to(np.arange(k)[:, None], idx.shape)
    real = (mask > 0) & (idx >= 0) & (idx < n)
    np.add.at(out, (rows[real], idx[real]), rewards[real])
    reached = np.zeros((k, n), bool)
    reached[rows[real], idx[real]] = True
    out[~reached] = np.nan
    return out


def trial_episode_returns_reference(rewards, dones, mask, n) -> np.ndarray:
    """Slow per-step reference of :func:`trial_episode_returns` (tests only)."""
    out = np.full((rewards.shape[0], n), np.nan)
    for k in range(rewards.shape[0]):
        e = -1
        for t in range(rewards.shape[1]):
            if mask[k, t] <= 0:
                continue
            e += int(dones[k, t] > 0)
            if 0 <= e < n:
                out[k, e] = (0.0 if np.isnan(out[k, e]) else out[k, e]) + rewards[k, t]
    return out


def merge_moments(count: float, mean: float, var: float, x: np.ndarray) -> tuple[float, float, float]:
    """Running (count, mean, population variance) merged with the samples ``x`` (N,) (Chan et al.'s
    parallel update); returns the new triple. An empty ``x`` leaves it unchanged."""
    n = float(x.size)
    if n == 0:
        return count, mean, var
    b_mean, b_var = float(x.mean()), float(x.var())
    total = count + n
    delta = b_mean - mean
    new_mean = mean + delta * n / total
    m2 = var * count + b_var * n + delta * delta * count * n / total
    return total, new_mean, m2 / total
