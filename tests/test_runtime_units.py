"""Pieces of the Ray runtime tested without a cluster: chunk dispatch of RaySampler (every chunk goes to
the least-loaded rollout worker; worker handles are stand-ins that record their calls) and the learner
actor's device choice."""

from collections import deque
from types import SimpleNamespace

import pytest

from ssm_metarl_ray.runtime.learner import learner_device
from ssm_metarl_ray.runtime.workers import RaySampler, _Worker, assign_chunks


def test_assign_chunks_spreads_before_stacking():
    assert assign_chunks([0, 0], 2, 2) == [0, 1]  # the bug: [0, 0] (worker 1 idle)
    assert assign_chunks([0, 0, 0], 5, 2) == [0, 1, 2, 0, 1]
    assert assign_chunks([2, 0], 3, 2) == [1, 1]  # worker 0 is full
    assert assign_chunks([1, 0], 1, 2) == [1]
    assert assign_chunks([2, 2], 4, 2) == []
    assert assign_chunks([], 3, 2) == []


class _Handle:
    def __init__(self, log: list, index: int):
        self.sample = SimpleNamespace(remote=lambda *a: log.append(index) or object())


def test_dispatch_uses_every_worker():
    log: list[int] = []
    sampler = object.__new__(RaySampler)
    sampler.workers = [_Worker(i, 0, f"w{i}", _Handle(log, i)) for i in range(2)]
    sampler.rt = SimpleNamespace(max_inflight_per_worker=2)
    sampler._ref, sampler._version = None, 0
    tasks, chunks, inflight = list(range(10)), [(0, 5), (5, 10)], {}
    sampler._dispatch(tasks, chunks, deque([0, 1]), inflight)
    assert log == [0, 1] and sorted(c for _, c in inflight.values()) == [0, 1]


def test_learner_device_never_falls_back_silently():
    assert learner_device([], cuda_available=False) == "cpu"
    assert learner_device([0], cuda_available=True) == "cuda"
    with pytest.raises(RuntimeError, match=r"--learner-gpus: Ray assigned GPU\(s\) \[0\].*cannot use CUDA"):
        learner_device([0], cuda_available=False, torch_version="2.13.0+cpu")
