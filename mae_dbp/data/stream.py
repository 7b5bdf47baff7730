"""Streaming training crops: k crops per read, a shuffle buffer, split by rank and by worker.

:class:`CropStream` is the training set when ``data.crops_per_image > 1`` or ``data.shards`` is set.
An epoch reads every image once (images are what epochs count) and yields ``k`` crops of each:

* the sources (image files, or shards) are shuffled per epoch with ``(seed, epoch)``, identically on
  every rank; rank r takes sources r, r + world, ...; DataLoader worker w of it every W-th of those;
* each worker's crops pass through a shuffle buffer of ``buffer`` crops (default ``max(2, k)`` x
  the batch), so a batch mixes many images instead of a few images' k crops;
* every rank yields exactly ``batches_per_epoch`` batches (computed from the image count alone, so
  all ranks step together under DDP); a worker that runs out of its sources reads them again;
* the boxes, flips and the buffer draw from a generator seeded by ``(seed, epoch, rank, worker)``:
  an epoch's samples depend on nothing before it, so a run resumed at an epoch boundary sees the
  same data as one that never stopped.

Items are ``((crop (C, S, S) float32, label 0), image index)`` like the folder path's
``WithIndex`` items; :meth:`CropStream.names` maps indices back to files / shard samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mae_dbp.data.crops import CropFirst
from mae_dbp.data.shards import IMAGE_EXT, ShardSet, shard_samples
from mae_dbp.data.window import ImageWindows, open_window
from mae_dbp.errors import UserInputError


@dataclass
class StreamPlan:
    """Where this process's slice of the stream comes from: batch size, rank / world, seed."""

    batch_size: int
    rank: int = 0
    world: int = 1
    seed: int = 0
    batches: int | None = None  # batches per epoch if not the images' share (benchmarks: a long epoch)


class CropStream(IterableDataset):
    """``k`` crops per read of the images of a folder (``paths``) or of ``shards``."""

    def __init__(self, crop: CropFirst, channels: int, k: int = 1, paths: Sequence[Path] | None = None,
                 shards: ShardSet | None = None, buffer: int = 0, skip_bad: bool = False,
                 labels: Sequence[int] | None = None) -> None:
        if (paths is None) == (shards is None):
            raise ValueError("CropStream needs paths or shards")
        if k < 1:
            raise UserInputError(f"data.crops_per_image: expected an int >= 1, got {k}")
        self.crop, self.channels, self.k, self.buffer, self.skip_bad = crop, int(channels), int(k), int(buffer), skip_bad
        self.paths = [Path(p) for p in paths] if paths is not None else None
        self.shards = shards
        self.labels = list(labels) if labels is not None else [0] * self.images
        self.plan, self.epoch = StreamPlan(1), 0
        self.bad_files: list[str] = []
        self.warnings: list[str] = []
        self.bytes_read = 0  # bytes asked of files / shard streams (this process)
        self.pages_read = 0  # bytes of the memory pages those reads touched (mae_dbp.data.window)
        self.images_read = 0

    # -- sizes -------------------------------------------------------------------------------

    @property
    def images(self) -> int:
        """Images per epoch over all ranks (each read once)."""
        return len(self.paths) if self.paths is not None else self.shards.samples

    def __len__(self) -> int:
        """Crops this rank yields per epoch (``batches_per_epoch`` x the batch)."""
        return self.batches_per_epoch() * self.plan.batch_size

    def batches_per_epoch(self) -> int:
        """Batches per rank and epoch: this rank's share of the images x k, in whole batches."""
        if self.plan.batches is not None:
            return self.plan.batches
        return (self.images // self.plan.world) * self.k // self.plan.batch_size

    def sources(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.shards.shards)

    def names(self, indices: Sequence[int]) -> list[str]:
        """The file (or ``shard:key``) of each image index."""
        names = [str(p) for p in self.paths] if self.paths is not None else self.shards.names()
        return [names[i] for i in indices]

    def check_first(self) -> None:
        """Open the first image (folder) or the first sample of the first shard: a wrong channel
        count or an unreadable file fails before training starts."""
        opener, _, _ = next(self._images(0))
        opener().close()

    def configure(self, plan: StreamPlan) -> None:
        per_rank = self.sources() // plan.world
        if per_rank == 0:
            what = "images" if self.paths is not None else "shards"
            raise UserInputError(f"data: {self.sources()} {what} for {plan.world} processes: every process needs "
                                 f"at least one ({'write more shards: mae-dbp data shard --shard-size' if self.shards else ''})")
        self.plan = plan

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -- reading -----------------------------------------------------------------------------

    def _slot(self) -> tuple[list[int], int, int]:
        """This worker's sources (indices), its quota of batches and its seed, for this epoch."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan
        order = np.random.default_rng([plan.seed, self.epoch]).permutation(self.sources())
        mine = [int(i) for i in order[plan.rank::plan.world]]
        active = min(workers, len(mine))
        total = self.batches_per_epoch()
        quota = 0 if worker >= active else total // active + (worker < total % active)
        seed = int(np.random.default_rng([plan.seed, self.epoch, plan.rank, worker]).integers(2**62))
        return mine[worker::workers] if worker < active else [], quota, seed

    def _images(self, source: int) -> Iterator[tuple[Callable[[], ImageWindows], int, int | None]]:
        """An opener of each image of one source, its image index and the bytes already read for it
        (a shard member is read whole; None: the window reader counts). A damaged shard raises."""
        if self.paths is not None:
            yield partial(open_window, self.paths[source], self.channels), source, None
            return
        start = sum(s.count for s in self.shards.shards[:source])
        shard = self.shards.shards[source]
        for offset, (key, data) in enumerate(shard_samples(shard)):
            yield partial(open_window, data, self.channels, name=f"{shard.url}:{key}.{IMAGE_EXT}"), start + offset, len(data)

    def _crops(self, sources: list[int], generator: torch.Generator) -> Iterator[tuple | None]:
        """Crops of ``sources`` in order, pass after pass (``None`` ends a pass); a bad image is
        raised, or skipped and listed in ``bad_files`` with ``skip_bad``."""
        while True:
            produced = False
            for source in sources:
                for opener, index, nbytes in self._images(source):
                    try:
                        with opener() as reader:
                            crops = self.crop.crops(reader, self.k, generator)
                        self.bytes_read += reader.bytes_read if nbytes is None else nbytes
                        self.pages_read += reader.pages_read if nbytes is None else nbytes
                        self.images_read += 1
                    except UserInputError as error:
                        if not self.skip_bad:
                            raise
                        self.bad_files.append(str(error).split(": ", 1)[0])
                        continue
                    produced = True
                    for crop in crops:
                        yield (crop, self.labels[index]), index
            if not produced:
                raise UserInputError(f"no readable images among this worker's {len(sources)} sources "
                                     f"(first: {self.bad_files[0] if self.bad_files else '?'})")
            yield None

    def __iter__(self) -> Iterator[tuple]:
        sources, quota, seed = self._slot()
        wanted = quota * self.plan.batch_size
        if wanted == 0:
            return
        generator = torch.Generator().manual_seed(seed)
        pick = random.Random(seed)
        size = self.buffer or max(2, self.k) * self.plan.batch_size
        buffer: list[tuple] = []
        for item in self._crops(sources, generator):
            if item is None:  # a pass is done: drain in random order
                pick.shuffle(buffer)
                while buffer:
                    yield buffer.pop()
                    wanted -= 1
                    if wanted == 0:
                        return
                continue
            if len(buffer) < size:
                buffer.append(item)
                continue
            j = pick.randrange(size)
            yield buffer[j]
            buffer[j] = item
            wanted -= 1
            if wanted == 0:
                return
