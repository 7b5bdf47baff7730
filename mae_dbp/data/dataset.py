"""Image-folder datasets for training: flat folders or class sub-folders, any channel count.

Files are read by :func:`mae_dbp.data.io.read_image` (png / jpg / tif, 8/16-bit, float) and
returned as float32 ``(C, H, W)`` tensors in raw pixel units before the transform. With a
:class:`~mae_dbp.data.crops.CropFirst` transform (training, ``data.crop_first``) only the crop's
window is read and converted (:mod:`mae_dbp.data.window`). A float image with NaN/Inf pixels is a
bad file like an unreadable one (named, or skipped with ``skip_bad``).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mae_dbp.config import DataConfig
from mae_dbp.data.checks import header_warnings
from mae_dbp.data.crops import CropFirst
from mae_dbp.data.io import image_folder, list_images, read_image
from mae_dbp.data.shards import open_shards
from mae_dbp.data.split import check_fraction, pick
from mae_dbp.data.stream import CropStream
from mae_dbp.data.transforms import build_transform, channel_stats
from mae_dbp.data.window import open_window
from mae_dbp.errors import UserInputError


def label_paths(paths: Sequence[Path], root: Path | None) -> tuple[list[str], list[int]]:
    """Class names and one label per path from the first sub-folder under ``root``.

    Flat layout (any image directly in ``root``, or no root given): no classes, all labels 0.
    """
    if root is None:
        return [], [0] * len(paths)
    parts = [Path(p).relative_to(root).parts for p in paths]
    if any(len(part) == 1 for part in parts):
        return [], [0] * len(paths)
    classes = sorted({part[0] for part in parts})
    index = {name: i for i, name in enumerate(classes)}
    return classes, [index[part[0]] for part in parts]


class ImageFolderDataset(Dataset):
    """``(image float32 (C, H, W), label)`` for each image under a folder or in a list of paths.

    A bad file (unreadable, wrong channel count, NaN/Inf pixels) raises the reader's one-line
    :class:`UserInputError` naming it. With ``skip_bad=True`` every file is checked once at
    construction and bad ones are dropped into ``bad_files`` (paths, as strings) with their
    messages in ``bad_reasons``; a file that still fails later is replaced by the next good index
    and recorded too (in that worker's copy only, when DataLoader workers are used).
    """

    def __init__(self, source: Path | str | Sequence[Path | str], channels: int,
                 transform: Callable[[Tensor], Tensor] | None = None, skip_bad: bool = False,
                 root: Path | str | None = None) -> None:
        if isinstance(source, (str, Path)):
            root = image_folder(source)
            paths = list_images(root)
        else:
            paths = [Path(p) for p in source]
            if not paths:
                raise UserInputError("no images given (empty list of paths)")
            root = Path(root) if root is not None else None
        self.root = root
        self.channels = int(channels)
        self.transform = transform
        self.skip_bad = bool(skip_bad)
        self.bad_files: list[str] = []
        self.bad_reasons: dict[str, str] = {}
        self.warnings: list[str] = []
        self.bytes_read = 0  # bytes the reader asked for, over all samples (this process)
        self.pages_read = 0  # bytes of the memory pages those reads touched (mae_dbp.data.window)
        self.classes, labels = label_paths(paths, root)
        self.samples: list[tuple[Path, int]] = list(zip(paths, labels))
        if self.skip_bad:
            self.scan_bad_files()

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.samples]

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _record(self, path: Path, error: UserInputError) -> None:
        if str(path) not in self.bad_reasons:
            self.bad_files.append(str(path))
            self.bad_reasons[str(path)] = str(error)

    def scan_bad_files(self, workers: int | None = None) -> list[str]:
        """Read every file once (threads), drop the bad ones from the dataset; returns ``bad_files``."""

        def check(path: Path) -> UserInputError | None:
            try:
                read_image(path, self.channels)
            except UserInputError as error:
                return error
            return None

        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(check, self.paths))
        good = []
        for sample, error in zip(self.samples, errors):
            if error is None:
                good.append(sample)
            else:
                self._record(sample[0], error)
        if not good:
            raise UserInputError(f"no readable {self.channels}-channel images among {len(self.samples)} files "
                                 f"(first problem: {self.bad_reasons[self.bad_files[0]]})")
        self.samples = good
        return self.bad_files

    def load(self, index: int) -> Tensor:
        """The raw image ``index`` as float32 (C, H, W), before the transform."""
        path = self.samples[index][0]
        array = read_image(path, self.channels)
        size = path.stat().st_size
        self.bytes_read += size
        self.pages_read += size
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def sample(self, index: int) -> Tensor:
        """Image ``index`` through the transform: window-first for a :class:`CropFirst` transform."""
        if isinstance(self.transform, CropFirst):
            with open_window(self.samples[index][0], self.channels) as reader:
                image = self.transform.crops(reader, 1)[0]
            self.bytes_read += reader.bytes_read
            self.pages_read += reader.pages_read
            return image
        image = self.load(index)
        return self.transform(image) if self.transform is not None else image

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for step in range(len(self.samples)):
            i = (index + step) % len(self.samples)
            try:
                image = self.sample(i)
            except UserInputError as error:
                if not self.skip_bad:
                    raise
                self._record(self.samples[i][0], error)
                continue
            return image, self.samples[i][1]
        raise UserInputError(f"no readable images left in the dataset (bad: {len(self.bad_files)})")


def split_train_val(paths: Sequence[Path | str], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded, deterministic split of ``paths`` (order of the input does not matter).

    ``round(n * val_fraction)`` paths (at least 1) go to validation, the rest (at least 1) to
    training; both lists come back sorted.
    """
    check_fraction(val_fraction, "data.val_fraction")
    ordered = sorted(Path(p) for p in paths)
    if len(ordered) < 2:
        raise UserInputError(f"need at least 2 images to split off a validation set, got {len(ordered)}")
    chosen = set(pick(len(ordered), val_fraction, seed))
    train = [p for i, p in enumerate(ordered) if i not in chosen]
    val = [p for i, p in enumerate(ordered) if i in chosen]
    return train, val


def print_warnings(lines: Sequence[str]) -> None:
    """Each line as ``mae-dbp: warning: ...`` on stderr, once (rank 0 under torchrun/accelerate)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for line in lines:
        print(f"mae-dbp: warning: {line}", file=sys.stderr, flush=True)


def train_val_datasets(data_cfg: DataConfig, channels: int, img_size: int, augment: bool = True,
                       ) -> tuple[ImageFolderDataset | CropStream, ImageFolderDataset]:
    """Train / validation sets of normalised float32 ``(C, H, W)`` images of ``img_size`` px from a
    config ``data`` section: ``val_root``, or a seeded ``val_fraction`` of ``root``.

    ``channels`` and ``img_size`` are what the model takes (its builder owns them). Training images
    get a random resized crop + flip when ``augment`` (read window-first unless ``crop_first`` is
    false), else the validation transform (resize + centre crop). ``crops_per_image > 1`` or
    ``shards`` make the training set a :class:`CropStream` (shards need ``val_root``). Loads one
    image of each first, so a folder of the wrong channel count fails before any training starts.
    Prints one warning line per kind of data that would silently train badly
    (:func:`mae_dbp.data.checks.header_warnings`); the lines are also kept in ``train.warnings``.
    """
    if not data_cfg.root and not data_cfg.shards:
        raise UserInputError("data.root: expected a folder of images, got None")
    if data_cfg.shards and not data_cfg.val_root:
        raise UserInputError("data.val_root: expected a folder of validation images with data.shards, got None")
    mean, std = channel_stats(data_cfg, channels)
    val_tf = build_transform(False, img_size, mean, std, channels=channels)
    crop = CropFirst(img_size, mean, std, channels=channels, scale=tuple(data_cfg.crop_scale), level_gap=data_cfg.level_gap)
    whole = build_transform(True, img_size, mean, std, channels=channels, scale=tuple(data_cfg.crop_scale))
    train_tf = (crop if data_cfg.crop_first else whole) if augment else val_tf
    kwargs = dict(channels=channels, skip_bad=data_cfg.skip_bad)
    stream = dict(k=data_cfg.crops_per_image, buffer=data_cfg.shuffle_buffer, skip_bad=data_cfg.skip_bad)
    if data_cfg.shards:
        shards = open_shards(data_cfg.shards)
        if shards.channels != channels:
            raise UserInputError(f"{data_cfg.shards}: the shards hold {shards.channels}-channel images, the model "
                                 f"takes {channels} (model.in_chans)")
        train, val = CropStream(crop, channels, shards=shards, **stream), ImageFolderDataset(data_cfg.val_root, transform=val_tf, **kwargs)
    elif data_cfg.val_root:
        train = ImageFolderDataset(data_cfg.root, transform=train_tf, **kwargs)
        val = ImageFolderDataset(data_cfg.val_root, transform=val_tf, **kwargs)
    else:
        root = image_folder(data_cfg.root)
        train_paths, val_paths = split_train_val(list_images(root), data_cfg.val_fraction, data_cfg.val_seed)
        train = ImageFolderDataset(train_paths, transform=train_tf, root=root, **kwargs)
        val = ImageFolderDataset(val_paths, transform=val_tf, root=root, **kwargs)
    if isinstance(train, ImageFolderDataset) and data_cfg.crops_per_image > 1 and augment:
        train = CropStream(crop, channels, paths=train.paths, labels=train.targets, **stream)
    for dataset in (train, val):
        dataset.check_first() if isinstance(dataset, CropStream) else dataset[0]
    paths = val.paths + (train.paths if train.paths is not None else [])
    train.warnings = header_warnings(paths, img_size)
    print_warnings(train.warnings)
    return train, val
