import numpy as np
import pytest

from ssm_metarl_ray.algorithms.returns import (
    discounted_returns,
    gae,
    gae_reference,
    linear_baseline,
    normalize_advantages,
)


def _batch(seed=0, K=5, T=12):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(K, T)).astype(np.float32)
    values = rng.normal(size=(K, T)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=K)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    return rewards * mask, values, mask


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_reference(lam):
    r, v, m = _batch()
    np.testing.assert_allclose(gae(r, v, m, 0.9, lam), gae_reference(r, v, m, 0.9, lam), rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_zero_values_is_discounted_return():
    r, _, m = _batch(1)
    np.testing.assert_allclose(gae(r, np.zeros_like(r), m, 0.97, 1.0), discounted_returns(r, m, 0.97), atol=1e-5)


def test_discounted_returns_by_hand():
    r = np.array([[1.0, 2.0, 3.0, 9.0]], np.float32)
    m = np.array([[1, 1, 1, 0]], np.float32)  # last step is padding and must be ignored
    np.testing.assert_allclose(discounted_returns(r, m, 0.5), [[1 + 1 + 0.75, 2 + 1.5, 3, 0]])


def test_linear_baseline_fits_linear_returns_and_ignores_padding():
    K, T = 4, 30
    obs = np.random.default_rng(0).normal(size=(K, T, 3)).astype(np.float32)
    returns = (2.0 * obs[..., 0] - obs[..., 2] + 0.5).astype(np.float32)
    mask = np.ones((K, T), np.float32)
    mask[0, 20:] = 0
    pred = linear_baseline(obs, returns, mask)
    np.testing.assert_allclose(pred[mask > 0], returns[mask > 0], atol=1e-3)
    assert np.all(pred[mask == 0] == 0)


def test_normalize_advantages_masked():
    r, _, m = _batch(2)
    a = normalize_advantages(r, m)
    assert abs(a[m > 0].mean()) < 1e-5 and abs(a[m > 0].std() - 1) < 1e-3
    assert np.all(a[m == 0] == 0)


def test_lagged_baseline_predicts_with_the_previous_fit():
    """rllab's order: a never-fitted baseline predicts 0 (advantages = normalised returns); the next batch's
    advantages use the coefficients fitted on the previous batch, not on itself."""
    from ssm_metarl_ray.algorithms.returns import fit_linear_baseline, predict_linear_baseline
    from ssm_metarl_ray.rollout.worker import lagged_advantages
    from ssm_metarl_ray.types import EpisodeBatch

    rng = np.random.default_rng(0)

    def batch():
        K, T = 4, 6
        z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
        return EpisodeBatch(inputs=z(K, T, 3), obs=rng.normal(size=(K, T, 2)).astype(np.float32),
                            actions=z(K, T, 1), rewards=rng.normal(size=(K, T)).astype(np.float32),
                            logp=z(K, T), dones=z(K, T), mask=np.ones((K, T), np.float32),
                            advantages=z(K, T), returns=z(K, T))

    b0, b1 = batch(), batch()
    coef0 = lagged_advantages(b0, None, 0.99, 1.0)
    np.testing.assert_allclose(b0.advantages, normalize_advantages(b0.returns, b0.mask), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(coef0, fit_linear_baseline(b0.obs, b0.returns, b0.mask))
    lagged_advantages(b1, coef0, 0.99, 1.0)
    expected = normalize_advantages(b1.returns - predict_linear_baseline(b1.obs, b1.mask, coef0), b1.mask)
    np.testing.assert_allclose(b1.advantages, expected, rtol=1e-4, atol=1e-5)


def test_merge_moments_equals_moments_of_the_concatenation():
    from ssm_metarl_ray.algorithms.returns import merge_moments

    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 2.0, size=n) for n in (5, 1, 40, 0, 17)]
    state = (0.0, 0.0, 1.0)
    for x in parts:
        state = merge_moments(*state, x)
    allx = np.concatenate(parts)
    assert state[0] == allx.size
    np.testing.assert_allclose(state[1:], (allx.mean(), allx.var()), rtol=1e-12)
