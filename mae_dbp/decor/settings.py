"""Per-layer DBP settings: one dataclass, its defaults and its range checks (everything else that
configures DBP, e.g. the trainer's schedule keys, extends this type rather than repeating it)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mae_dbp.decor.errors import expect

VARIANTS = ("standard", "gain", "triangular", "low_rank")
DEFAULT_LR = 5e-4  # the DBP-MAE paper's R learning rate (epsilon)


def check(ok: bool, key: str, expected: str, value: Any) -> None:
    """:func:`~mae_dbp.decor.errors.expect` for the setting ``decor.KEY`` (a :class:`DecorError`)."""
    expect(ok, f"decor.{key}", expected, value)


@dataclass
class DecorSettings:
    """What one decorrelated layer needs.

    kappa: weight of the whitening term V (0 = decorrelate only, 0.5 = decorrelate + whiten).
    lr: R learning rate (epsilon) per update; a trainer may scale it per step (a schedule).
    lr_scale: this layer's multiplier of every R step (a per-site R lr; 1 = none).
    sample_frac: fraction of the input rows (tokens / conv positions) used for the update, in (0, 1].
    variant: one of ``VARIANTS``; rank: number of columns of U and V for ``low_rank``.
    seed: seed of the torch Generator that draws the subsample (offset per layer by apply()).
    """

    kappa: float = 0.0
    lr: float = DEFAULT_LR
    lr_scale: float = 1.0
    sample_frac: float = 0.1
    variant: str = "standard"
    rank: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        check(0.0 < self.sample_frac <= 1.0, "sample_frac", "a number in (0, 1]", self.sample_frac)
        check(0.0 <= self.kappa <= 1.0, "kappa", "a number in [0, 1]", self.kappa)
        check(self.lr >= 0, "lr", "a number >= 0", self.lr)
        check(self.lr_scale >= 0, "lr_scale", "a number >= 0", self.lr_scale)
        check(self.variant in VARIANTS, "variant", f"one of {', '.join(VARIANTS)}", self.variant)
        check(self.variant != "low_rank" or self.rank >= 1, "rank", "an int >= 1 for the low_rank variant", self.rank)

    def layer_fields(self) -> dict[str, Any]:
        """This object's :class:`DecorSettings` fields only (also for a subclass with more keys)."""
        return {f.name: getattr(self, f.name) for f in fields(DecorSettings)}

    def replace(self, **changes: Any) -> "DecorSettings":
        """A checked copy with ``changes`` (always a plain :class:`DecorSettings`)."""
        return DecorSettings(**{**self.layer_fields(), **changes})
