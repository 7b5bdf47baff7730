"""mmseg pipeline transforms for industrial images: any channel count, 8/16-bit, png or tif.

``LoadImageChannels`` reads with the project's reader (``mae_dbp.data.io.read_image``: TIFF via
tifffile, PNG via Pillow, channels in file order, no rescaling) and gives mmseg an HWC float32
``img``. ``LoadIndexMask`` reads the index mask and checks it against its image and the classes.

Why the mask check lives here (lazily, at load time) rather than in the dataset's ``__init__``:
every mask is read here anyway, so the check costs one ``bincount`` per sample, while a full scan
at start-up would re-read thousands of 2048 x 2048 masks on every run and rank. The error is raised
the first time a bad file is touched and names it; the data tools validate a folder up front.
"""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from mae_dbp.data.io import check_mask_values, read_image, read_mask
from mae_dbp.errors import UserInputError


@TRANSFORMS.register_module()
class LoadImageChannels(BaseTransform):
    """``img_path`` -> ``img`` (H, W, C) float32 in raw units, plus ``img_shape``/``ori_shape``.

    Args:
        channels: required channel count (None: any); a file with another count is an error.
        to_float32: convert to float32 (mmseg's geometric transforms keep the dtype otherwise).
    """

    def __init__(self, channels: int | None = None, to_float32: bool = True) -> None:
        self.channels = channels
        self.to_float32 = to_float32

    def transform(self, results: dict) -> dict:
        chw = read_image(results["img_path"], self.channels)
        img = np.ascontiguousarray(chw.transpose(1, 2, 0))
        if self.to_float32:
            img = img.astype(np.float32)
        results["img"] = img
        results["img_shape"] = img.shape[:2]
        results["ori_shape"] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels}, to_float32={self.to_float32})"


@TRANSFORMS.register_module()
class LoadIndexMask(BaseTransform):
    """``seg_map_path`` -> ``gt_seg_map`` (H, W) uint8/uint16, checked against image size and classes.

    Must come after the image loader (it compares with ``ori_shape``). ``num_classes`` and
    ``ignore_index`` default to the values the dataset puts in each sample
    (``IndustrialSegDataset`` does); without a class count only the size is checked.
    """

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        path = results["seg_map_path"]
        if "ori_shape" not in results:
            raise RuntimeError("LoadIndexMask must come after the image loader in the pipeline")
        mask = read_mask(path)
        image_hw = tuple(int(v) for v in results["ori_shape"][:2])
        if tuple(mask.shape) != image_hw:
            raise UserInputError(f"{path}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                                 f"{results.get('img_path')} is {image_hw[0]}x{image_hw[1]}")
        num_classes = self.num_classes if self.num_classes is not None else results.get("num_classes")
        ignore = self.ignore_index if self.ignore_index is not None else results.get("ignore_index", 255)
        if num_classes is not None:
            check_mask_values(mask, int(num_classes), int(ignore), path)
        results["gt_seg_map"] = mask.astype(np.uint8 if int(mask.max()) <= 255 else np.uint16)
        results.setdefault("seg_fields", []).append("gt_seg_map")
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
