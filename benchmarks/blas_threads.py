"""numpy BLAS threads and the linear baseline: median fit+predict time with numpy's default BLAS threads
vs one thread (what ``utils.threads.limit_blas_threads`` sets in-process), in one run, on one batch of
navigation-2d-sized data (meta-batch task: 20 trajectories x 100 steps x 2-d observations) and of
HalfCheetah-sized data (20 x 200 x 17).

  python benchmarks/blas_threads.py            # -> results/blas_threads.json
  python benchmarks/blas_threads.py --smoke    # seconds, nothing written
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    from threadpoolctl import threadpool_limits

    from ssm_metarl_ray.algorithms.returns import linear_baseline
    from ssm_metarl_ray.utils.threads import blas_threads

    a = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    repeats = 5 if a.smoke else 200
    rng = np.random.default_rng(0)
    rows = []
    for name, (k, t, d) in {"navigation-2d": (20, 100, 2), "halfcheetah": (20, 200, 17)}.items():
        obs, ret = rng.normal(size=(k, t, d)).astype(np.float32), rng.normal(size=(k, t)).astype(np.float32)
        mask = np.ones((k, t), np.float32)
        fit = lambda obs=obs, ret=ret, mask=mask: linear_baseline(obs, ret, mask)  # noqa: E731
        default_threads = blas_threads()
        default = median_ms(fit, repeats)
        with threadpool_limits(limits=1, user_api="blas"):
            one = median_ms(fit, repeats)
        rows.append({"data": name, "shape": [k, t, d], "default_blas_threads": default_threads,
                     "default_ms": round(default, 3), "one_thread_ms": round(one, 3),
                     "speedup_one_thread": round(default / one, 2)})
        print(rows[-1])
    _common.write("blas_threads", a, "python benchmarks/blas_threads.py", {"repeats": repeats, "results": rows})
    return {"results": rows}


if __name__ == "__main__":
    main()
