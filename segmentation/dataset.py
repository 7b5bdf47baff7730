"""``IndustrialSegDataset``: an mmseg dataset over the industrial folder layout.

::

    SPLIT/images/<stem>.tif|.png   1/2/3-channel, 8/16-bit images (sub-folders allowed)
    SPLIT/masks/<stem>.png         index masks, same stem (and sub-folder) and H, W
    SPLIT/classes.yaml             classes: [...], palette: [[r, g, b], ...], ignore_index: 255

``SPLIT`` is ``data_root`` joined with the parent of ``data_prefix.img_path``: the shipped configs
use ``data_root=DATA`` with ``img_path='train/images'`` (mmseg's convention), so the split is
``DATA/train``; with the default prefix ``images`` the split is ``data_root`` itself.

Class names, palette and ignore index come from ``classes.yaml``; a config may state the classes
and ignore index it was written for, and a mismatch with the file is an error naming it. Every
sample carries ``num_classes``/``ignore_index`` so ``LoadIndexMask`` can check mask values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from mae_dbp.data.io import CLASSES_FILE, MASK_SUFFIX, list_images, read_classes
from mae_dbp.errors import UserInputError


@DATASETS.register_module()
class IndustrialSegDataset(BaseSegDataset):
    """Images + index masks with matching stems; metadata from ``classes.yaml``.

    Args:
        data_root: the data folder (the split folder itself with the default ``data_prefix``).
        classes: the class names the config expects (None: take the file's).
        ignore_index: the mask value the config ignores (None: take the file's).
        data_prefix: image and mask sub-folders of ``data_root``.
        classes_file: folder holding ``classes.yaml`` (default: the split folder, see above).
        **kwargs: the rest of :class:`mmseg.datasets.BaseSegDataset` (pipeline, test_mode, ...).
    """

    METAINFO: dict = dict()

    def __init__(self, data_root: str, classes: Sequence[str] | None = None, ignore_index: int | None = None,
                 data_prefix: dict | None = None, classes_file: str | None = None, **kwargs) -> None:
        prefix = data_prefix or dict(img_path="images", seg_map_path="masks")
        info_dir = Path(classes_file) if classes_file else Path(data_root) / Path(prefix["img_path"]).parent
        info = read_classes(info_dir)
        where = info_dir / CLASSES_FILE
        if classes is not None and list(classes) != info["classes"]:
            raise UserInputError(f"{where} lists classes {info['classes']} but the config expects {list(classes)}")
        if ignore_index is not None and int(ignore_index) != info["ignore_index"]:
            raise UserInputError(f"{where} has ignore_index {info['ignore_index']} but the config uses {ignore_index}")
        metainfo = dict(classes=tuple(info["classes"]), palette=info["palette"])
        super().__init__(data_root=data_root, data_prefix=dict(prefix), metainfo=metainfo,
                         ignore_index=info["ignore_index"], **kwargs)

    def load_data_list(self) -> list[dict]:
        """One entry per image, with its mask; an image without a mask is an error naming both."""
        image_dir = Path(self.data_prefix["img_path"])
        mask_dir = Path(self.data_prefix["seg_map_path"])
        num_classes = len(self._metainfo["classes"])
        entries, missing, seen = [], [], {}
        for image in list_images(image_dir):
            mask = mask_dir / image.relative_to(image_dir).with_suffix(MASK_SUFFIX)
            if mask in seen:
                raise UserInputError(f"{image} and {seen[mask]} share the stem of mask {mask}; keep one image per stem")
            seen[mask] = image
            if not mask.is_file():
                missing.append(f"{image} (expected {mask})")
                continue
            entries.append(dict(img_path=str(image), seg_map_path=str(mask), label_map=self.label_map,
                                reduce_zero_label=self.reduce_zero_label, seg_fields=[],
                                num_classes=num_classes, ignore_index=self.ignore_index))
        if missing:
            shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise UserInputError(f"images without a mask in {mask_dir}: {shown}")
        return entries
