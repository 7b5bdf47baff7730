"""Preview images: the input next to ground truth and prediction drawn as palette overlays.

Pure numpy + Pillow. Multi-channel or 16-bit inputs are shown as channel 0, contrast-stretched
(1st-99th percentile) to grey; 3-channel uint8 inputs are shown as they are (RGB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mae_dbp.data.display import stretch
from mae_dbp.data.io import read_image


def display_rgb(image_chw: np.ndarray) -> np.ndarray:
    """(C, H, W) image in raw units -> (H, W, 3) uint8 for display."""
    if image_chw.shape[0] == 3 and image_chw.dtype == np.uint8:
        return np.ascontiguousarray(image_chw.transpose(1, 2, 0))
    scaled = stretch(image_chw[0])
    return np.repeat((scaled * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def overlay(rgb: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5,
            ignore_index: int = 255) -> np.ndarray:
    """Blend class colours over ``rgb`` (H, W, 3) uint8 where ``mask`` (H, W) is a known class."""
    colours = np.asarray(palette, dtype=np.float32)
    valid = (mask >= 0) & (mask < len(colours)) & (mask != ignore_index)
    out = rgb.astype(np.float32)
    out[valid] = (1.0 - alpha) * out[valid] + alpha * colours[mask[valid]]
    return (out + 0.5).astype(np.uint8)


def save_preview(image_path: str | Path, prediction: np.ndarray, palette: Sequence[Sequence[int]],
                 out_file: str | Path, ground_truth: np.ndarray | None = None,
                 ignore_index: int = 255) -> Path:
    """Write ``[input | ground truth | prediction]`` (GT panel only if given) as a PNG; returns its path."""
    from PIL import Image

    rgb = display_rgb(read_image(image_path))
    if rgb.shape[:2] != prediction.shape:  # e.g. a resizing test pipeline: show at prediction size
        rgb = np.asarray(Image.fromarray(rgb).resize(prediction.shape[::-1], Image.BILINEAR))
    panels = [rgb]
    if ground_truth is not None and ground_truth.shape == prediction.shape:
        panels.append(overlay(rgb, ground_truth, palette, ignore_index=ignore_index))
    panels.append(overlay(rgb, prediction, palette, ignore_index=ignore_index))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(panels, axis=1)).save(out_file)
    return out_file
