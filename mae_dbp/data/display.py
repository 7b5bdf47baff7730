"""Showing raw images (any dtype, any channel count) to people: one contrast stretch for all plots."""

from __future__ import annotations

import numpy as np


def stretch(array: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """``array`` (any shape, raw units) mapped linearly so that its ``low``-th percentile is 0 and
    its ``high``-th is 1, clipped to [0, 1], as float32. A constant array becomes all zeros."""
    values = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(values, (low, high))
    return np.clip((values - lo) / max(float(hi - lo), 1e-8), 0.0, 1.0)
