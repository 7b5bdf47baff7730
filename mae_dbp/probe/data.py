"""The probe's labelled folder, read once: normalised images at the model's size and their targets.

Images go through the validation transform of pretraining (resize the shorter side, centre crop,
normalise with the run's statistics); masks get the same resize (nearest) and crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mae_dbp.data.dataset import label_paths, split_train_val
from mae_dbp.data.io import image_folder, list_images, mask_path_for, read_classes, read_image, read_mask
from mae_dbp.data.transforms import build_transform
from mae_dbp.errors import UserInputError
from mae_dbp.probe.config import ProbeConfig


@dataclass
class ProbeSplit:
    """``images`` (N, C, S, S) float32, normalised; ``targets``: masks (N, S, S) int64 or labels (N,)."""

    images: Tensor
    targets: Tensor


@dataclass
class ProbeData:
    train: ProbeSplit
    val: ProbeSplit
    classes: list[str]
    ignore_index: int = -1


def _subset(paths: list[Path], count: int, seed: int) -> list[Path]:
    """At most ``count`` of ``paths``, a seeded choice (numpy's own generator), in sorted order."""
    if len(paths) <= count:
        return paths
    chosen = np.random.default_rng(seed).choice(len(paths), count, replace=False)
    return [paths[i] for i in sorted(chosen)]


def _splits(root: Path, cfg: ProbeConfig, paths_of) -> tuple[list[Path], list[Path], Path, Path]:
    """(train paths, val paths, train root, val root): ``train/`` + ``val/`` or a seeded split."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        return paths_of(root / "train"), paths_of(root / "val"), root / "train", root / "val"
    train, val = split_train_val(paths_of(root), cfg.val_fraction, cfg.seed)
    return train, val, root, root


def _mask(path: Path, size: int) -> Tensor:
    mask = torch.from_numpy(read_mask(path).astype(np.int64))[None]
    mask = F.center_crop(F.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST), size)
    return mask[0]


def load_probe_data(cfg: ProbeConfig, channels: int, img_size: int, mean: list[float], std: list[float]) -> ProbeData:
    """Read ``cfg.folder`` (see :class:`~mae_dbp.probe.config.ProbeConfig`) into memory."""
    root = Path(cfg.folder)
    if not root.is_dir():
        raise UserInputError(f"eval.probe.folder: {root} is not a folder")
    transform = build_transform(False, img_size, mean, std, channels)

    def images(paths: list[Path]) -> Tensor:
        return torch.stack([transform(torch.from_numpy(read_image(p, channels).astype(np.float32))) for p in paths])

    if cfg.kind == "segmentation":
        train, val, train_root, val_root = _splits(root, cfg, lambda r: list_images(image_folder(r)))
        info = read_classes(train_root)
        split = []
        for paths, where in ((train, train_root), (val, val_root)):
            paths = _subset(paths, cfg.max_images, cfg.seed)
            masks = torch.stack([_mask(mask_path_for(where, p), img_size) for p in paths])
            split.append(ProbeSplit(images(paths), masks))
        return ProbeData(split[0], split[1], list(info["classes"]), int(info["ignore_index"]))
    train, val, train_root, val_root = _splits(root, cfg, list_images)
    classes, _ = label_paths(train, train_root)
    if len(classes) < 2:
        raise UserInputError(f"eval.probe.folder: {train_root} needs one sub-folder per class (at least 2) for kind "
                             "classification")
    index = {name: i for i, name in enumerate(classes)}
    split = []
    for paths, where in ((train, train_root), (val, val_root)):
        paths = _subset(paths, cfg.max_images, cfg.seed)
        names = [p.relative_to(where).parts[0] for p in paths]
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise UserInputError(f"eval.probe.folder: {where} has class folder(s) {unknown} that {train_root} lacks")
        split.append(ProbeSplit(images(paths), torch.tensor([index[n] for n in names])))
    return ProbeData(split[0], split[1], classes)
