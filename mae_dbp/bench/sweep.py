"""The learning-rate sweep both comparison benches run, the same way for BP and DBP."""

from __future__ import annotations

import statistics
from typing import Callable, Sequence


def lr_sweep(runner: Callable[[str, float, int], dict], methods_lrs: dict[str, list[float]],
             sweep_seeds: Sequence[int], key: str, higher_is_better: bool = False) -> dict:
    """Run every method at each of its lrs on every sweep seed (``runner(method, lr, seed)`` returns
    a dict with ``key``), alternating the methods at each lr, and choose per method the lr whose median
    ``key`` over the sweep seeds is best (lowest, or highest with ``higher_is_better``).

    Returns {method: {"lrs": [...], key: [median per lr], "chosen": lr}}.
    """
    sweep: dict[str, dict] = {m: {"lrs": list(lrs), key: []} for m, lrs in methods_lrs.items()}
    for index in range(max(len(lrs) for lrs in methods_lrs.values())):
        for method, lrs in methods_lrs.items():
            if index < len(lrs):
                values = [runner(method, lrs[index], seed)[key] for seed in sweep_seeds]
                sweep[method][key].append(statistics.median(values))
    for entry in sweep.values():
        pick = max if higher_is_better else min
        entry["chosen"] = entry["lrs"][pick(range(len(entry["lrs"])), key=lambda i: entry[key][i])]
    return sweep
