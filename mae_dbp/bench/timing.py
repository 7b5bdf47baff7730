"""Alternating timer: run two step functions in turns in one process and compare their medians."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_alternating(
    steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per call of each step, calling them in turn (A B A B ...) after warm-up.

    Alternating spreads slow drifts of the machine (thermal, other load) over every contender.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
