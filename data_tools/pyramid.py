"""``mae-dbp data pyramid FOLDER --out DIR``: pyramidal TIFF copies of a folder's images.

Each image becomes ``DIR/images/<same relative path>.tif``: the full-resolution pixels, unchanged
and uncompressed (level 0), plus reduced-resolution levels in SubIFDs, the layout OME-TIFF and
libvips use for large images. Level j is the image resized to ``(H >> j) x (W >> j)`` px with the
training crop's own filter (antialiased bicubic), rounded and clipped to the image's integer dtype;
levels are added while their shorter side stays at least ``--min-side`` px. A 2048² image gets 1024,
512 and 256 px levels (+33% on disk).

Why: a training crop of a 2048² image spans ~1,000 px; reading, converting and resizing all of its
pixels is what limits the loader (`mae-dbp bench data`; docs/history.md). With levels, the crop is read from the
coarsest level on which it still spans ``data.level_gap`` x the model's input (the training reader
does this by itself; :meth:`mae_dbp.data.window.ImageWindows.level_for`). Masks and
``classes.yaml`` are copied unchanged, so DIR stands in for FOLDER. Every file is written
atomically; nothing in FOLDER is touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mae_dbp.data.io import CLASSES_FILE, image_folder, list_images, mask_folder, read_header, read_image, write_tiff
from mae_dbp.errors import UserInputError
from mae_dbp.files import atomic_write
from mae_dbp.run_dir import prepare_output


def reduced_levels(image: np.ndarray, min_side: int) -> list[np.ndarray]:
    """Levels 1, 2, ... of a ``(C, H, W)`` integer image: ``(C, H >> j, W >> j)`` in its dtype,
    while the shorter side is at least ``min_side`` px (bicubic, antialiased, from level 0)."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    from mae_dbp.data.transforms import BICUBIC

    info = np.iinfo(image.dtype)
    full = torch.from_numpy(image.astype(np.float32))
    levels, j = [], 1
    while min(image.shape[1] >> j, image.shape[2] >> j) >= max(min_side, 1):
        size = [image.shape[1] >> j, image.shape[2] >> j]
        level = TF.resize(full, size, interpolation=BICUBIC, antialias=True)
        levels.append(level.round_().clamp_(info.min, info.max).numpy().astype(image.dtype))
        j += 1
    return levels


def write_pyramids(directory: Path | str, out: Path | str, min_side: int = 224, force: bool = False,
                   progress: bool = True) -> dict[str, int]:
    """Pyramidal copies of ``directory``'s images in ``out/images`` (+ masks, classes.yaml);
    returns ``{"images": n, "levels": levels of the first image}``."""
    from tqdm import tqdm

    if min_side < 1:
        raise UserInputError(f"--min-side: expected px >= 1, got {min_side}")
    root = Path(directory)
    source = image_folder(root)
    images = list_images(source)
    targets: dict[Path, Path] = {}
    for path in images:  # fail before writing anything (headers only)
        dtype = read_header(path).dtype
        if not np.issubdtype(np.dtype(dtype), np.integer):
            raise UserInputError(f"{path}: {dtype} pixels; pyramids are written for integer images (uint8, uint16)")
        target = path.relative_to(source).with_suffix(".tif")
        if target in targets:
            raise UserInputError(f"{path} and {targets[target]} would both be written as images/{target.as_posix()}")
        targets[target] = path
    masks = mask_folder(root)
    out = prepare_output(out, ("images", "masks", CLASSES_FILE), force=force)
    levels_first = 0
    for target, path in tqdm(targets.items(), desc="pyramid", unit="img", disable=not progress):
        image = read_image(path)
        levels = reduced_levels(image, min_side)
        atomic_write(out / "images" / target, lambda temporary: write_tiff(temporary, image, levels))
        levels_first = levels_first or len(levels)
    if masks is not None:
        shutil.copytree(masks, out / "masks", dirs_exist_ok=True)
    if (root / CLASSES_FILE).is_file():
        shutil.copyfile(root / CLASSES_FILE, out / CLASSES_FILE)
    return {"images": len(targets), "levels": levels_first}
