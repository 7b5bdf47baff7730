"""The two horizons of ``bench speedup``.

``short`` (default, the quickstart's regime): ``--epochs`` (14) of the config's batch on whatever
the data folder holds, e.g. ~220 optimizer steps on 512 crops, where BP sits on an early plateau.

``long``: at least :data:`LONG_MIN_STEPS` optimizer steps on at least :data:`LONG_MIN_IMAGES`
training images. The epochs are computed from the data size (images x ``data.crops_per_image``)
and the config's effective batch (:func:`long_epochs`, the loop's own batch plan: micro-batches of
``train.batch_size`` at most, the last incomplete one dropped), so the warm-up + cosine schedule,
which the loop lays over ``epochs x steps per epoch``, spans the whole run. E.g. 4,000 images at effective batch 32: 125
steps per epoch, 12 epochs, 1,500 steps.
"""

from __future__ import annotations

import math
from pathlib import Path

from mae_dbp.errors import UserInputError

HORIZONS = ("short", "long")
SHORT_EPOCHS = 14
LONG_MIN_STEPS = 1500
LONG_MIN_IMAGES = 4000


def steps_per_epoch(samples: int, train_cfg) -> int:
    """Optimizer steps of one epoch over ``samples`` (images x ``data.crops_per_image``) in one
    process, as the loop runs it."""
    from mae_dbp.train.setup import batch_plan

    micro, accumulation = batch_plan(train_cfg, 1)
    return (samples // micro) // accumulation


def long_epochs(samples: int, train_cfg, min_steps: int = LONG_MIN_STEPS) -> tuple[int, int]:
    """(epochs, optimizer steps) of the fewest whole epochs over ``samples`` with at least ``min_steps`` steps."""
    per_epoch = steps_per_epoch(samples, train_cfg)
    if per_epoch < 1:
        raise UserInputError(f"{samples} training samples make no optimizer step of train.effective_batch="
                             f"{train_cfg.effective_batch}")
    epochs = math.ceil(min_steps / per_epoch)
    return epochs, epochs * per_epoch


def count_images(folder: Path) -> int:
    """Image files in ``folder`` (recursively, as the datasets list them)."""
    from mae_dbp.data.io import list_images

    return len(list_images(folder))


def check_long_data(train_dir: Path, images: int, min_images: int = LONG_MIN_IMAGES) -> None:
    """Refuse a training folder too small for the long horizon, naming it and its count."""
    if images < min_images:
        raise UserInputError(f"{train_dir}: --horizon long needs at least {min_images} training images, found "
                             f"{images} (e.g. mae-dbp data photos --out DIR --train-crops {min_images} --sources all)")
