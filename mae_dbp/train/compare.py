"""Compare runs on wall-clock: when did a run first reach another run's best value?"""

from __future__ import annotations

import math


def time_to_reach(rows: list[dict], target: float, key: str = "val_loss", lower_is_better: bool = True,
                  time_key: str = "train_seconds") -> float | None:
    """Training seconds at the first evaluation whose ``key`` reaches ``target`` (None if never)."""
    for row in rows:
        value = float(row[key])
        if math.isfinite(value) and (value <= target if lower_is_better else value >= target):
            return float(row[time_key])
    return None


def best(rows: list[dict], key: str = "val_loss", lower_is_better: bool = True) -> tuple[float, float]:
    """(best value, training seconds when it was first reached)."""
    values = [(float(r[key]), float(r["train_seconds"])) for r in rows if math.isfinite(float(r[key]))]
    if not values:
        return math.nan, math.nan
    pick = min if lower_is_better else max
    value = pick(v for v, _ in values)
    return value, next(t for v, t in values if v == value)


def speedup_vs_baseline(baseline: list[dict], candidate: list[dict], key: str = "val_loss",
                        lower_is_better: bool = True) -> dict:
    """The candidate's wall-clock to the baseline's best value, as a fraction of the baseline's.

    ``fraction`` < 1 means the candidate got there faster; None when it never got there.
    """
    target, baseline_seconds = best(baseline, key, lower_is_better)
    seconds = time_to_reach(candidate, target, key, lower_is_better)
    fraction = seconds / baseline_seconds if seconds is not None and baseline_seconds > 0 else None
    return {"target": target, "baseline_seconds": baseline_seconds, "candidate_seconds": seconds, "fraction": fraction}
