"""Learning-rate schedules, evaluated per optimizer step (iteration), not per epoch."""

from __future__ import annotations

import math

from mae_dbp.errors import UserInputError

DECOR_SCHEDULES = ("constant", "follow", "cosine")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to ``floor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decor_lr(kind: str, step: int, total_steps: int, base: float, main_lr: float, main_peak: float) -> float:
    """The R learning rate at ``step``.

    constant: ``base`` always; follow: ``base`` scaled like the main lr (main_lr / main_peak, so it
    warms up and decays with it); cosine: ``base`` decayed to 0 by a cosine over the whole run.
    """
    if kind == "constant":
        return base
    if kind == "follow":
        return base * (main_lr / main_peak if main_peak > 0 else 0.0)
    if kind == "cosine":
        progress = min(1.0, step / max(1, total_steps))
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserInputError(f"decor.lr_schedule must be one of {', '.join(DECOR_SCHEDULES)}, got {kind!r}")
