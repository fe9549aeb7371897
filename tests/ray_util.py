"""Helpers shared by the Ray test modules (tiny configs, comparisons)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ssm_metarl_ray.config import AdaptConfig, ExperimentConfig, MetaConfig, ModelConfig
from ssm_metarl_ray.runtime.config import RuntimeConfig


@pytest.fixture(scope="module")
def ray_local():
    """One 2-CPU local cluster per module (``address="local"``: never attach to another one on this host)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False, namespace="ssm-test")
    yield
    ray.shutdown()


def rt(**kw) -> RuntimeConfig:
    """RuntimeConfig with test-sized timeouts."""
    return RuntimeConfig(**{"sample_timeout_s": 60.0, "startup_timeout_s": 60.0, **kw})


def tiny_cfg(iterations: int = 2, meta_batch_size: int = 4, episodes: int = 3, **kw) -> ExperimentConfig:
    return ExperimentConfig(env="navigation-2d", iterations=iterations, num_train_tasks=20, num_test_tasks=2,
                            seed=0, model=ModelConfig(hidden_size=16, num_layers=1, state_size=8),
                            meta=replace(MetaConfig(), meta_batch_size=meta_batch_size,
                                         episodes_per_task=episodes),
                            adapt=replace(AdaptConfig(), adapt_steps=1, episodes_per_step=episodes,
                                          buffer_size=20_000),
                            **kw)


def learning_history(history: list[dict]) -> list[dict]:
    """Training metrics without the wall-clock timings."""
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.task_index == y.task_index
        for ex, ey in zip([*x.pre, x.post], [*y.pre, y.post]):
            assert ex.weights_version == ey.weights_version
            np.testing.assert_array_equal(ex.actions, ey.actions)
            np.testing.assert_array_equal(ex.rewards, ey.rewards)
            np.testing.assert_array_equal(ex.logp, ey.logp)
