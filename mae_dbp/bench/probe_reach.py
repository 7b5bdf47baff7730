"""BP vs DBP judged on features: DBP's training time and steps to BP's best linear-probe score.

Read from the metrics rows of a pair of runs whose config has ``eval.probe``; probe points are
epochs, so times have epoch (probe) resolution. Empty when BP's rows hold no probe score.
"""

from __future__ import annotations

import math

PROBE_KEYS = ("bp_best_probe", "dbp_best_probe", "bp_seconds_to_best_probe", "dbp_seconds_to_bp_best_probe",
              "probe_time_fraction", "bp_steps_to_best_probe", "dbp_steps_to_bp_best_probe", "probe_step_fraction")


def probed(rows: list[dict]) -> list[dict]:
    """The rows with a probe score."""
    return [r for r in rows if isinstance(r.get("probe_score"), (int, float)) and not math.isnan(r["probe_score"])]


def first_reach(rows: list[dict], score: float) -> dict | None:
    """The first row whose probe score is at least ``score`` (None: never)."""
    return next((r for r in probed(rows) if r["probe_score"] >= score), None)


def probe_pair(bp_rows: list[dict], dbp_rows: list[dict]) -> dict:
    """{PROBE_KEYS: ...} of one BP / DBP pair (fractions below 1: DBP reaches BP's best probe score
    sooner; None: never); empty without probe scores."""
    bp, dbp = probed(bp_rows), probed(dbp_rows)
    if not bp:
        return {}
    best = max(r["probe_score"] for r in bp)
    bp_at, dbp_at = first_reach(bp, best), first_reach(dbp, best)

    def fraction(key: str) -> float | None:
        return dbp_at[key] / bp_at[key] if dbp_at is not None and bp_at[key] > 0 else None

    return {"probe_metric": bp[0].get("probe_metric"), "bp_best_probe": best,
            "dbp_best_probe": max((r["probe_score"] for r in dbp), default=None),
            "bp_seconds_to_best_probe": bp_at["train_seconds"],
            "dbp_seconds_to_bp_best_probe": dbp_at["train_seconds"] if dbp_at else None,
            "probe_time_fraction": fraction("train_seconds"),
            "bp_steps_to_best_probe": bp_at["step"], "dbp_steps_to_bp_best_probe": dbp_at["step"] if dbp_at else None,
            "probe_step_fraction": fraction("step")}
