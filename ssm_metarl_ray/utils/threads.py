"""Thread caps for processes that sample and fit baselines.

numpy's OpenBLAS starts one thread per core; the small least-squares fits of the linear baseline
(``algorithms/returns.py``) then oversubscribe the cores the samplers and the learner already use
(``benchmarks/blas_threads.py`` measures the cost). Ray workers get one BLAS thread from Ray; the
in-process path calls :func:`limit_blas_threads`. torch's own threads are left to ``num_threads``.
"""

from __future__ import annotations

_LIMITER = None  # kept alive: the limit holds while it exists


def limit_blas_threads(n: int = 1) -> None:
    """Cap the BLAS libraries numpy loaded (OpenBLAS/MKL found by threadpoolctl) at ``n`` threads in this
    process. torch's statically linked BLAS and its OpenMP pool are not touched."""
    global _LIMITER
    from threadpoolctl import threadpool_limits

    _LIMITER = threadpool_limits(limits=n, user_api="blas")


def blas_threads() -> int:
    """Threads of the first BLAS library loaded in this process (0 if none)."""
    from threadpoolctl import threadpool_info

    return next((int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"), 0)
