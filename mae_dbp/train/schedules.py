"""Learning-rate schedules, evaluated per optimizer step (iteration), not per epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to ``floor``."""

    peak: float
    total_steps: int
    warmup_steps: int = 0
    floor: float = 0.0

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decor_lr(kind: str, step: int, total_steps: int, base: float, main_lr: float, main_peak: float,
             warmup_steps: int = 0, hold: float = 0.0) -> float:
    """The R learning rate at ``step`` (``kind`` is checked by :class:`mae_dbp.config.DecorConfig`).

    constant: ``base`` always; follow: ``base`` scaled like the main lr (main_lr / main_peak, so it
    warms up and decays with it); cosine: ``base`` for the first ``hold`` fraction of the run, then
    decayed to 0 by a cosine over the rest (hold 0: over the whole run). Every R step changes the
    layer's function W R, even once W's own lr has decayed, so a constant R lr keeps moving the
    network late in a cosine run; ``cosine`` lets R settle with W.
    ``warmup_steps`` = w > 0 multiplies any of them by (step + 1) / w for the first w steps (R's own
    linear warm-up from 0, on the same convention as :class:`WarmupCosine`); 0 = none.
    """
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if kind == "follow":
        return ramp * base * (main_lr / main_peak if main_peak > 0 else 0.0)
    if kind == "cosine":
        start = hold * total_steps
        progress = min(1.0, max(0.0, step - start) / max(1.0, total_steps - start))
        return ramp * base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return ramp * base
