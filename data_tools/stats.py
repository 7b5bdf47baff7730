"""Per-channel mean and standard deviation of an image folder, streamed one image at a time.

Values are in RAW pixel units (0..65535 for 16-bit, 0..255 for 8-bit): mmseg's data_preprocessor
and the pretraining normaliser both subtract/divide in raw units. The std is the population std
(ddof=0) over all pixels of all images. Each image contributes its exact float64 mean and sum of
squared deviations, merged with Chan's parallel formula (no cancellation, no image kept around).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mae_dbp.data.io import image_folder, list_images, read_image
from mae_dbp.errors import UserInputError
from mae_dbp.files import write_json
from mae_dbp.run_dir import refuse_existing


class RunningMoments:
    """Running per-channel count, mean and sum of squared deviations (M2), all float64."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.mean = np.zeros(channels, dtype=np.float64)
        self.m2 = np.zeros(channels, dtype=np.float64)

    def update(self, image_chw: np.ndarray) -> None:
        """Add one (C, H, W) image."""
        n = image_chw.shape[1] * image_chw.shape[2]
        mean = np.empty_like(self.mean)
        m2 = np.empty_like(self.m2)
        for c in range(image_chw.shape[0]):  # one float64 channel at a time keeps peak memory low
            channel = image_chw[c].astype(np.float64)
            mean[c] = channel.mean()
            channel -= mean[c]
            m2[c] = np.dot(channel.ravel(), channel.ravel())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta * delta * (self.count * n / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(1, self.count))


def compute_stats(directory: Path | str, out_json: Path | str | None = None, progress: bool = True,
                  force: bool = False) -> dict[str, Any]:
    """Mean/std per channel over ``DIR/images`` (or ``DIR`` itself); written to ``out_json`` if given.

    Returns ``{"mean": [...], "std": [...], "channels": C, "dtype": "uint16", "num_images": N,
    "num_pixels": P}``. All images must share the channel count and dtype. An existing
    ``out_json`` is only replaced with ``force``.
    """
    from tqdm import tqdm

    root = Path(directory)
    if out_json is not None:
        refuse_existing(Path(out_json).parent, [Path(out_json)], force)
    images = list_images(image_folder(root))
    moments: RunningMoments | None = None
    dtype = None
    for path in tqdm(images, desc="stats", unit="img", disable=not progress):
        image = read_image(path)
        if moments is None:
            moments, dtype = RunningMoments(image.shape[0]), image.dtype
        elif image.shape[0] != moments.mean.size:
            raise UserInputError(f"{path}: expected {moments.mean.size} channels, found {image.shape[0]}")
        elif image.dtype != dtype:
            raise UserInputError(f"{path}: dtype {image.dtype} differs from the folder's {dtype}")
        moments.update(image)
        del image
    assert moments is not None and dtype is not None
    result = {
        "mean": moments.mean.tolist(),
        "std": moments.std.tolist(),
        "channels": int(moments.mean.size),
        "dtype": str(np.dtype(dtype)),
        "num_images": len(images),
        "num_pixels": int(moments.count),
    }
    if out_json is not None:
        write_json(Path(out_json), result)
    return result
