"""The training DataLoader, built in one place for the folder and the streaming paths.

:func:`build_train_loader` returns the loader the training loop iterates and the images one epoch
reads. A map-style image set (``data.crops_per_image: 1``, no shards) gets a shuffling DataLoader
prepared by accelerate (its seedable sampler and rank split, as before). A :class:`CropStream`
(k crops per read, or shards) splits itself by rank and worker, so its DataLoader is *not* handed
to accelerate (which would dispatch an iterable set from rank 0 or cut every rank's stream); a
:class:`DeviceLoader` moves its batches to the device instead.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from mae_dbp.config import DataConfig
from mae_dbp.data.stream import CropStream, StreamPlan
from mae_dbp.errors import UserInputError


def worker_message(error: UserInputError) -> str:
    """The one line of a :class:`UserInputError` re-raised by a DataLoader worker (whose message
    carries the worker's traceback), else the message itself."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "UserInputError: " in lines[-1]:
        return lines[-1].split("UserInputError: ", 1)[1]
    return str(error)


class DeviceLoader:
    """A DataLoader of a :class:`CropStream`: batches moved to ``device``, ``set_epoch`` passed on."""

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader, self.device = loader, device

    @property
    def dataset(self) -> CropStream:
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        from accelerate.utils import send_to_device

        try:
            for batch in self.loader:
                yield send_to_device(batch, self.device, non_blocking=True)
        except UserInputError as error:
            raise UserInputError(worker_message(error)) from None


def build_train_loader(train_set: Dataset, data_cfg: DataConfig, batch_size: int, accelerator, seed: int,
                       ) -> tuple[Any, int]:
    """``(loader, images per epoch)`` yielding ``((images (B, C, S, S), labels), indices)`` per
    process: ``train_set`` is a map-style set of ``((image, label), index)`` items (the loop's
    ``WithIndex``) or a :class:`CropStream`. ``accelerator``: the run's ``accelerate.Accelerator``."""
    workers = data_cfg.num_workers
    pin = accelerator.device.type == "cuda"
    if isinstance(train_set, CropStream):
        train_set.configure(StreamPlan(batch_size, accelerator.process_index, accelerator.num_processes, seed))
        loader = DataLoader(train_set, batch_size=batch_size, num_workers=workers, pin_memory=pin)
        return DeviceLoader(loader, accelerator.device), train_set.images
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=pin)
    return accelerator.prepare(loader), len(train_set)
