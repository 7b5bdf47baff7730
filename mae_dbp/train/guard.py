"""Instability guard: roll back and calm R down when training goes bad.

Two triggers: a non-finite training loss from finite inputs (non-finite inputs are a data error,
not instability: the trainer names the files), or a validation loss above ``(1 + tolerance) x best`` for
``patience`` evaluations in a row. Either restores the last good state (the trainer does that) and
multiplies the R learning rate by ``lr_factor``; after ``max_restores`` restores, or once the scale
falls under ``min_scale``, R updates stop for the rest of the run. (The DBP-MAE paper saw late
instability with a constant R lr; this is the remedy it asked for.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from mae_dbp.config import GuardConfig


def non_finite_rows(inputs: torch.Tensor) -> list[int]:
    """Batch rows of ``inputs`` (B, ...) holding a nan or inf: bad data rather than instability."""
    return torch.nonzero(~torch.isfinite(inputs.detach()).flatten(1).all(1)).flatten().tolist()


@dataclass
class InstabilityGuard:
    """Keeps the guard's state; the trainer asks it and performs the restores."""

    settings: GuardConfig
    decor_scale: float = 1.0
    decor_stopped: bool = False
    restores: int = 0
    bad_evals: int = 0
    events: list[dict] = field(default_factory=list)

    def val_is_bad(self, val_loss: float, best: float) -> bool:
        """Count a validation loss that rose past the tolerance; True when patience is used up."""
        if not self.settings.enabled:
            return False
        if not math.isfinite(val_loss):
            self.bad_evals = self.settings.patience
        elif math.isfinite(best) and val_loss > best * (1.0 + self.settings.tolerance):
            self.bad_evals += 1
        else:
            self.bad_evals = 0
        return self.bad_evals >= self.settings.patience

    def record_restore(self, reason: str, epoch: int, step: int) -> dict:
        """Note a restore, lower the R lr scale (or stop R updates); returns the logged event."""
        self.restores += 1
        self.bad_evals = 0
        self.decor_scale *= self.settings.lr_factor
        if self.restores >= self.settings.max_restores or self.decor_scale < self.settings.min_scale:
            self.decor_stopped = True
        event = {
            "epoch": epoch, "step": step, "reason": reason,
            "decor_lr_scale": 0.0 if self.decor_stopped else self.decor_scale,
            "decor_updates": "stopped" if self.decor_stopped else "on",
        }
        self.events.append(event)
        return event

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "settings"}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
