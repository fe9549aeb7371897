import os

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MUJOCO_GL", "disable")


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(1)
    yield


# The suite runs on two xdist workers, one module per worker at a time (pyproject: -n 2 --dist loadfile).
# Longest modules first (measured with --durations), so that no long module starts last and runs alone.
_LONGEST_FIRST = ("test_tune.py", "test_learning.py", "test_ray_faults.py", "test_benchmarks_smoke.py",
                  "test_cli.py", "test_buffer_durability.py", "test_ray_job.py", "test_ray_runtime.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept
