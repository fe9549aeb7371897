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
