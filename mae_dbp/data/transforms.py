"""Image transforms on float tensors ``(C, H, W)`` with any number of channels (torchvision v2).

Pixel values stay in raw units (e.g. 0..65535 for 16-bit data) until the normalisation, whose
mean / std are in those units. Resizing is bicubic with antialiasing (values may overshoot the
input range slightly, as usual). torchvision draws its randomness from torch's global RNG, so
DataLoader worker seeding applies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from mae_dbp.config import DataConfig
from mae_dbp.errors import UserInputError

BICUBIC = InterpolationMode.BICUBIC


class Normalize(v2.Normalize):
    """``(x - mean) / std`` per channel, in raw pixel units; one value or one per channel, checked."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], channels: int | None = None) -> None:
        mean_list = [float(m) for m in torch.as_tensor(mean, dtype=torch.float64).reshape(-1)]
        std_list = [float(s) for s in torch.as_tensor(std, dtype=torch.float64).reshape(-1)]
        if min(std_list) <= 0:
            raise UserInputError(f"data.std: expected positive values, got {std_list}")
        super().__init__(mean_list, std_list)
        if channels is not None:
            self.check(channels)

    def check(self, channels: int) -> None:
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise UserInputError(f"data.{key} has {len(values)} values for {channels}-channel images")

    def forward(self, *inputs):
        self.check(inputs[0].shape[-3])
        return super().forward(*inputs)


def channel_stats(data: DataConfig, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean / std in raw pixel units: from ``data.stats`` (a stats.json) or ``data.mean / std``.

    One value stands for every channel.
    """
    mean, std = data.mean, data.std
    if data.stats:
        path = Path(data.stats)
        if not path.is_file():
            raise UserInputError(f"data.stats file {path} does not exist")
        stats = json.loads(path.read_text())
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None or std is None:
            raise UserInputError(f"{path}: expected keys 'mean' and 'std'")
    mean = [float(mean)] if isinstance(mean, (int, float)) else [float(m) for m in mean]
    std = [float(std)] if isinstance(std, (int, float)) else [float(s) for s in std]
    return (mean * channels if len(mean) == 1 else mean), (std * channels if len(std) == 1 else std)


def build_transform(train: bool, img_size: int | Sequence[int], mean: float | Sequence[float],
                    std: float | Sequence[float], channels: int | None = None,
                    scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    """MAE pipeline on (C, H, W) float: train = random resized crop (``scale`` of the area, bicubic,
    antialiased) + horizontal flip; val = resize the shorter side + centre crop; both normalise.
    ``channels`` (optional) checks the lengths of mean / std upfront."""
    normalize = Normalize(mean, std, channels)
    if train:
        crop = v2.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=BICUBIC, antialias=True)
        return v2.Compose([crop, v2.RandomHorizontalFlip(), normalize])
    return v2.Compose([v2.Resize(img_size, interpolation=BICUBIC, antialias=True), v2.CenterCrop(img_size), normalize])
