"""Validation-loss curves against training seconds, read between validation points.

A curve is a list of ``(training seconds, validation loss)`` points, one per validation (once per
epoch), in increasing seconds. Everything here reads the **best-so-far** curve (the running minimum
of the loss; a non-finite loss keeps the previous best), linearly interpolated between consecutive
validation points: :func:`loss_at` (the loss at a time) and :func:`seconds_to` (the time a loss is
first reached). Both methods are read the same way. Outside the first and last validation point a
curve says nothing (None).

:func:`speedup_curve` gives ``bench speedup --horizon long``'s speed-up curve and loss gap at
equal training time; :func:`improvement_share` how far BP has left its early plateau.
"""

from __future__ import annotations

import math
from typing import Sequence

Curve = Sequence[tuple[float, float]]
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def best_so_far(curve: Curve) -> list[tuple[float, float]]:
    """The running minimum of the finite losses, from the first finite point on."""
    out: list[tuple[float, float]] = []
    for seconds, loss in curve:
        if math.isfinite(loss) and (not out or loss < out[-1][1]):
            out.append((float(seconds), float(loss)))
        elif out:
            out.append((float(seconds), out[-1][1]))
    return out


def loss_at(curve: Curve, seconds: float) -> float | None:
    """Best-so-far loss at ``seconds``, linear between validation points (None outside the curve)."""
    points = best_so_far(curve)
    if not points or not points[0][0] <= seconds <= points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if seconds <= t1:
            return v1 if t1 == t0 else v0 + (v1 - v0) * (seconds - t0) / (t1 - t0)
    return points[-1][1]


def seconds_to(curve: Curve, loss: float | None) -> float | None:
    """Training seconds at which the best-so-far curve first reaches ``loss`` (linear between
    validation points; the first point's time if it is already there; None: never)."""
    points = best_so_far(curve)
    if loss is None or not points:
        return None
    if points[0][1] <= loss:
        return points[0][0]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if v1 <= loss:  # v0 > loss >= v1, so v0 > v1
            return t0 + (t1 - t0) * (v0 - loss) / (v0 - v1)
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def speedup_curve(bp: Curve, dbp: Curve, fractions: Sequence[float] = FRACTIONS) -> list[dict]:
    """Per fraction ``f`` of BP's training seconds ``T`` (its last validation point), at ``t = f T``:
    BP's loss ``L = loss_at(bp, t)``; both methods' :func:`seconds_to` ``L`` and DBP's as a fraction
    of BP's (``time_fraction``; below 1: DBP sooner; None: never); and the loss gap at equal
    training time, DBP's best-so-far at ``t`` minus ``L`` (``loss_gap``, and ``relative_loss_gap`` =
    gap / L; below 0: DBP lower; None when DBP's curve does not reach ``t``)."""
    end = bp[-1][0] if bp else 0.0
    out = []
    for f in fractions:
        t = f * end
        level = loss_at(bp, t)
        bp_s, dbp_s = seconds_to(bp, level), seconds_to(dbp, level)
        dbp_loss = loss_at(dbp, t)
        gap = dbp_loss - level if dbp_loss is not None and level is not None else None
        out.append({"fraction": f, "seconds": t, "bp_loss": level, "bp_seconds_to_loss": bp_s,
                    "dbp_seconds_to_loss": dbp_s, "time_fraction": _ratio(dbp_s, bp_s), "dbp_loss": dbp_loss,
                    "loss_gap": gap, "relative_loss_gap": _ratio(gap, level)})
    return out


def improvement_share(curve: Curve, fraction: float = 1 / 3) -> float | None:
    """Share of the curve's total improvement (first validation loss minus best) made by ``fraction``
    of its training seconds: near 0 still on the early plateau there, near 1 done (None: no improvement)."""
    points = best_so_far(curve)
    if not points or points[0][1] == points[-1][1]:
        return None
    at = loss_at(points, fraction * points[-1][0])
    return None if at is None else (points[0][1] - at) / (points[0][1] - points[-1][1])


def curve_summary(runs: Sequence[dict]) -> list[dict]:
    """Per fraction of BP's run: :func:`~mae_dbp.bench.compare.median_range` over the runs'
    ``speedup_curve`` of the time fraction and the loss gaps."""
    from mae_dbp.bench.compare import median_range

    keys = ("time_fraction", "loss_gap", "relative_loss_gap")
    return [{"fraction": points[0]["fraction"], **{k: median_range([p[k] for p in points]) for k in keys}}
            for points in zip(*(r["speedup_curve"] for r in runs))]
