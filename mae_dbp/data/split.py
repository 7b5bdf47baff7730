"""The one seeded draw behind every train/val split and subset in the project.

Pretraining's ``data.val_fraction`` split, ``mae-dbp data tile`` (by source image), the stratified
``data digits`` split and ``data subset`` all pick ``round(count * fraction)`` items with
:func:`pick`, so they share the rounding, the bounds and the random generator (Python's
``random.Random``, seeded by an int or a string: the same on every platform and run).
"""

from __future__ import annotations

import random

from mae_dbp.errors import UserInputError


def pick_count(count: int, fraction: float, keep_one_out: bool) -> int:
    """``round(count * fraction)``, at least 1 when ``fraction > 0`` and ``count > 0``, and at most
    ``count - 1`` when ``keep_one_out`` (so the other side of a split is never empty)."""
    chosen = round(count * fraction)
    if fraction > 0 and count > 0:
        chosen = max(1, chosen)
    if keep_one_out:
        chosen = min(chosen, count - 1)
    return max(0, min(chosen, count))


def pick(count: int, fraction: float, seed: int | str, keep_one_out: bool = True) -> list[int]:
    """Sorted indices of :func:`pick_count` items of ``range(count)``, drawn without replacement.

    ``seed``: an int, or a string such as ``"0/train/cat"`` for one independent draw per group.
    """
    n = pick_count(count, fraction, keep_one_out)
    return sorted(random.Random(seed).sample(range(count), n))


def check_fraction(fraction: float, name: str, low_open: bool = True, high_open: bool = True) -> None:
    """Raise naming ``name`` (a config key or option) unless ``fraction`` lies in (0, 1), with the
    ends included when ``low_open`` / ``high_open`` is False."""
    above = fraction > 0 if low_open else fraction >= 0
    below = fraction < 1 if high_open else fraction <= 1
    if not (above and below):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise UserInputError(f"{name} must be in {interval}, got {fraction}")
