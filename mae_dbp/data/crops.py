"""The crop-first training transform: box from the header, read the window, then convert.

:class:`CropFirst` does what ``build_transform(train=True)`` does to a whole decoded image — a
random resized crop (``scale`` of the area, aspect ratio 3/4..4/3, bicubic, antialiased), a
horizontal flip with p = 0.5, the per-channel normalisation — but reads only the crop's window
(:mod:`mae_dbp.data.window`) and converts only that window to float32. The box is drawn by
:func:`draw_box`, torchvision's ``RandomResizedCrop`` rule with the same random calls, so with the
same RNG state the result equals the whole-image path (to float rounding of the resize).

With ``level_gap`` set and a pyramidal TIFF, each crop is read from the coarsest reduced level on
which it still spans ``level_gap`` x ``size`` px (:meth:`ImageWindows.level_for`): at gap 1 a
1,000 px crop of a 2048 px image for a 224 px input becomes a 250 px window of the 512 px level, so
far fewer pixels are read, converted and resized. The result is then the window of a pre-reduced image resized once more:
close to, not equal to, the full-resolution path (`mae-dbp bench data` measures the difference).

Randomness comes from torch's global RNG (as torchvision's, so DataLoader worker seeding applies)
or from a ``torch.Generator`` passed in (the streaming loader's per-epoch, per-worker seed).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from mae_dbp.data.transforms import BICUBIC, Normalize
from mae_dbp.data.window import ImageWindows

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def draw_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float] = RATIO,
             generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` px of a random resized crop of a ``height`` x ``width`` image: area a
    uniform ``scale`` fraction, log-uniform aspect ratio, ten tries, else the centre crop of the
    clamped ratio (``torchvision.transforms.v2.RandomResizedCrop``'s rule and RNG calls)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(tuple(ratio)))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_float(window: np.ndarray) -> Tensor:
    """A ``(C, h, w)`` integer (or float) window as a float32 tensor, converted in its memory order
    (an HWC window stays channels-last in memory: no transposing copy)."""
    return torch.from_numpy(np.asarray(window).astype(np.float32, order="K"))


class CropFirst:
    """Training crops of ``size`` px read window-first; ``mean`` / ``std`` in raw pixel units.

    ``crops(reader, k)`` gives ``k`` independent crops of one opened image; calling the transform
    on a whole ``(C, H, W)`` float tensor does the same from memory (the reference path).
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], channels: int | None = None,
                 scale: Sequence[float] = (0.2, 1.0), level_gap: float | None = None) -> None:
        self.size, self.scale = int(size), (float(scale[0]), float(scale[1]))
        self.normalize = Normalize(mean, std, channels)
        self.level_gap = level_gap  # None: always the full-resolution level

    def resize(self, window: Tensor) -> Tensor:
        """A float ``(C, h, w)`` window resized to ``(C, size, size)`` (bicubic, antialiased)."""
        return TF.resize(window, [self.size, self.size], interpolation=BICUBIC, antialias=True)

    def finish(self, window: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Resize a float ``(C, h, w)`` window to ``size``, flip with p = 0.5 (torchvision's draw:
        no flip when ``rand >= 0.5``), normalise."""
        out = self.resize(window)
        if torch.rand(1, generator=generator) < 0.5:
            out = TF.horizontal_flip(out)
        return self.normalize(out.contiguous())

    def crops(self, reader: ImageWindows, k: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """``k`` crops ``(C, size, size)`` float32 of the image behind ``reader``, each its own box."""
        _, height, width = reader.shape
        out = []
        for _ in range(k):
            box = draw_box(height, width, self.scale, generator=generator)
            level = reader
            if self.level_gap is not None:
                level, box = reader.level_for(*box, min_side=self.level_gap * self.size)
            out.append(self.finish(to_float(level.read(*box)), generator))
        return out

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        top, left, h, w = draw_box(image.shape[-2], image.shape[-1], self.scale, generator=generator)
        return self.finish(image[..., top:top + h, left:left + w], generator)
