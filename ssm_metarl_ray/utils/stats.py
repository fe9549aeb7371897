"""Summary statistics of per-task results."""

from __future__ import annotations

import numpy as np


def mean_sem(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along ``axis`` (s.e.m. 0 for a single sample)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    return x.mean(axis), (x.std(axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(x.mean(axis)))
