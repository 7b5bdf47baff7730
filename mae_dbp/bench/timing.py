"""Alternating timer: run step functions in turns in one process, so slow drifts of the machine
(thermal, a busy neighbour) fall on every contender alike."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from mae_dbp.bench.device import resolve_device, synchronize

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def alternating_samples(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 1,
                        clock: str = "wall", device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds of each call of each step, ``repeats`` rounds after ``warmup`` untimed ones; the
    order reverses every round (A B, B A, ...), so no step always runs first. ``clock``: "wall"
    (perf_counter) or "cpu" (this process's CPU time, blind to other processes' load). The clock is
    read after the work queued on ``device`` finished (default: the CUDA device when there is one)."""
    now = CLOCKS[clock]
    device = device or resolve_device("auto")
    for _ in range(warmup):
        for step in steps.values():
            step()
    order = list(steps.items())
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        for name, step in order if i % 2 == 0 else order[::-1]:
            synchronize(device)
            start = now()
            step()
            synchronize(device)
            samples[name].append(now() - start)
    return samples


def time_alternating(steps: dict[str, Callable[[], None]], repeats: int, warmup: int = 1,
                     clock: str = "wall", device: torch.device | None = None) -> dict[str, float]:
    """Median seconds per call of each step (:func:`alternating_samples`)."""
    return {name: statistics.median(values)
            for name, values in alternating_samples(steps, repeats, warmup, clock, device).items()}


def count_flops(calls: dict[str, Callable[[], None]]) -> dict[str, int]:
    """{name: FLOPs of one call} (``torch.utils.flop_counter``), for the ratios that claim equal work."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for name, call in calls.items():
        with FlopCounterMode(display=False) as counter:
            call()
        counts[name] = counter.get_total_flops()
    return counts
