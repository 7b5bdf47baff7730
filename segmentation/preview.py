"""Preview images: the input next to ground truth and prediction drawn as palette overlays.

numpy + Pillow for the pixels, matplotlib for titles and the colour legend of the classes. Multi-channel or 16-bit inputs are shown as channel 0, contrast-stretched
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


def _panel_scale(height: int, width: int, min_side: int) -> int:
    """Whole-number upscale so the shorter side of a panel is at least ``min_side`` pixels."""
    return max(1, -(-min_side // max(1, min(height, width))))


def save_preview(image_path: str | Path, prediction: np.ndarray, palette: Sequence[Sequence[int]],
                 out_file: str | Path, ground_truth: np.ndarray | None = None,
                 ignore_index: int = 255, class_names: Sequence[str] | None = None,
                 min_side: int = 256) -> Path:
    """Write ``[input | ground truth | prediction]`` (GT panel only if given) as a titled PNG with a
    colour legend of the classes; returns its path.

    Panels are upscaled by a whole factor (nearest neighbour, masks stay crisp) until their shorter
    side is at least ``min_side`` pixels, so a 64 x 64 crop is readable.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from PIL import Image

    rgb = display_rgb(read_image(image_path))
    if rgb.shape[:2] != prediction.shape:  # e.g. a resizing test pipeline: show at prediction size
        rgb = np.asarray(Image.fromarray(rgb).resize(prediction.shape[::-1], Image.BILINEAR))
    panels = [("input", rgb)]
    if ground_truth is not None and ground_truth.shape == prediction.shape:
        panels.append(("ground truth", overlay(rgb, ground_truth, palette, ignore_index=ignore_index)))
    panels.append(("prediction", overlay(rgb, prediction, palette, ignore_index=ignore_index)))
    scale = _panel_scale(*prediction.shape, min_side)
    height, width = prediction.shape[0] * scale, prediction.shape[1] * scale
    dpi = 100
    fig = Figure(figsize=(len(panels) * width / dpi, height / dpi + 0.9), dpi=dpi)
    axes = fig.subplots(1, len(panels))
    for ax, (title, panel) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.kron(panel, np.ones((scale, scale, 1), dtype=np.uint8)), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    names = list(class_names) if class_names else [f"class {i}" for i in range(len(palette))]
    handles = [Patch(color=np.asarray(colour) / 255.0, label=name) for name, colour in zip(names, palette)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.35 / (height / dpi + 0.9), bottom=0.55 / (height / dpi + 0.9),
                        wspace=0.03)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=dpi)
    return out_file
