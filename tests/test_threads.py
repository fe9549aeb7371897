"""In-process training caps numpy's BLAS threads at one (benchmarks/blas_threads.py: 19x slower linear
baseline fits with the default two threads on a loaded 2-core box)."""

import os
import subprocess
import sys

CODE = """
from ssm_metarl_ray.config import ExperimentConfig
from ssm_metarl_ray.training.meta_train import build_state
from ssm_metarl_ray.utils.threads import blas_threads
before = blas_threads()
build_state(ExperimentConfig(num_train_tasks=2, num_test_tasks=1))
print(before, blas_threads())
"""


def test_build_state_limits_blas_threads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    before, after = map(int, r.stdout.split())
    assert after == 1
    assert before == os.cpu_count() or before == 1  # OpenBLAS default: one per core
