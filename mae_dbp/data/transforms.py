"""Image transforms on float tensors ``(C, H, W)`` with any number of channels.

Pixel values stay in raw units (e.g. 0..65535 for 16-bit data) until :class:`Normalize`.
All randomness comes from torch's global RNG, so DataLoader worker seeding applies; no numpy.
Resizing is bicubic with antialiasing (values may overshoot the input range slightly, as usual).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mae_dbp.config import DataConfig
from mae_dbp.errors import UserInputError

Size = tuple[int, int]


def _pair(size: int | Sequence[int]) -> Size:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resize(image: Tensor, size: Size) -> Tensor:
    """Bicubic, antialiased resize of (C, H, W) to (C, *size); float32 in and out."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image.unsqueeze(0), size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.squeeze(0)


class RandomResizedCrop:
    """Random crop of ``scale`` x the image area and aspect ``ratio`` (w/h), resized to ``size``.

    Same sampling as torchvision's RandomResizedCrop (10 tries, then a centre crop with the
    aspect clamped into ``ratio``), but on tensors with any channel count.
    """

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = _pair(size)
        self.scale = scale
        self.ratio = ratio

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A crop box (top, left, h, w) for an image of ``height`` x ``width`` pixels."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1]).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,)).item())
                left = int(torch.randint(0, width - w + 1, (1,)).item())
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Tensor) -> Tensor:
        top, left, h, w = self.params(image.shape[-2], image.shape[-1])
        return resize(image[..., top : top + h, left : left + w], self.size)


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor) -> Tensor:
        if torch.rand(1).item() < self.p:
            return image.flip(-1)
        return image


class ResizeCenterCrop:
    """Deterministic view for validation: resize the shorter side to ``size`` then centre-crop."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        factor = max(self.size[0] / height, self.size[1] / width)
        scaled = (max(self.size[0], round(height * factor)), max(self.size[1], round(width * factor)))
        image = resize(image, scaled)
        top = (scaled[0] - self.size[0]) // 2
        left = (scaled[1] - self.size[1]) // 2
        return image[..., top : top + self.size[0], left : left + self.size[1]]


class Normalize:
    """(x - mean) / std per channel, in raw pixel units (e.g. mean 32768 for 16-bit data).

    ``mean`` / ``std``: one number for all channels or one per channel.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float],
                 channels: int | None = None) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if (self.std <= 0).any():
            raise UserInputError(f"data.std must be positive, got {self.std.tolist()}")
        if channels is not None:
            self._check(channels)

    def _check(self, channels: int) -> None:
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values.numel() not in (1, channels):
                raise UserInputError(f"data.{key} has {values.numel()} values for {channels}-channel images")

    def __call__(self, image: Tensor) -> Tensor:
        self._check(image.shape[0])
        return (image - self.mean[:, None, None]) / self.std[:, None, None]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor) -> Tensor:
        for transform in self.transforms:
            image = transform(image)
        return image


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
                    scale: tuple[float, float] = (0.2, 1.0)) -> Compose:
    """MAE pretraining pipeline: train = random resized crop (bicubic) + flip; val = resize +
    centre crop; both then normalise. ``channels`` (optional) checks mean/std lengths upfront."""
    normalize = Normalize(mean, std, channels)
    if train:
        return Compose([RandomResizedCrop(img_size, scale=scale), RandomHorizontalFlip(), normalize])
    return Compose([ResizeCenterCrop(img_size), normalize])
