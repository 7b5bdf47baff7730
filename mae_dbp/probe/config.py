"""The ``eval`` section of a pretraining config: ``eval.probe``, the online linear probe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from mae_dbp.config import require

PROBE_KINDS = ("segmentation", "classification")


@dataclass
class ProbeConfig:
    """A labelled folder whose validation score a linear head on the frozen encoder's features gets.

    ``folder``: segmentation: ``images/`` + ``masks/`` + ``classes.yaml`` (the segmentation layout);
    classification: one sub-folder per class. With ``train/`` and ``val/`` sub-folders those are
    the splits, else a seeded ``val_fraction`` of the folder. null: no probe.
    """

    folder: Optional[str] = None
    kind: str = "segmentation"  # one of PROBE_KINDS
    every: int = 1  # epochs between probes (and always after the last epoch)
    max_images: int = 256  # per split, a seeded subset of larger folders
    val_fraction: float = 0.25  # a folder without train/ and val/
    ridge: float = 1e-2  # ridge penalty, relative to the mean feature variance
    seed: int = 0  # the subset and the split (its own generator: the training RNG is untouched)
    batch_size: int = 32  # images per encoder forward

    def __post_init__(self) -> None:
        require(self.kind in PROBE_KINDS, "eval.probe.kind", f"one of {', '.join(PROBE_KINDS)}", self.kind)
        for key in ("every", "max_images", "batch_size"):
            require(getattr(self, key) >= 1, f"eval.probe.{key}", "an int >= 1", getattr(self, key))
        require(0 < self.val_fraction < 1, "eval.probe.val_fraction", "a fraction in (0, 1)", self.val_fraction)
        require(self.ridge > 0, "eval.probe.ridge", "a number > 0", self.ridge)


@dataclass
class EvalConfig:
    """What a pretraining run measures besides its validation loss."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
