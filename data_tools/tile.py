"""Cut large images (and their masks, identically) into square tiles, split train/val by source image.

Tiles start every ``tile - overlap`` px; the last tile of a row/column is aligned to the image
border, so every pixel is covered. The split is drawn over *source images*, so the tiles of one
image are never on both sides. Output::

    OUT/{train,val}/images/<stem>_y<Y>_x<X>.<ext>   (tif stays tif, png/jpg become png)
    OUT/{train,val}/masks/<stem>_y<Y>_x<X>.png       (when DIR/masks exists)
    OUT/classes.yaml and OUT/{train,val}/classes.yaml (copied), OUT/split.json (sources per split)

Only one source image (and its mask) is in memory at a time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from mae_dbp.data.io import (CLASSES_FILE, image_folder, list_images, mask_folder, mask_path_for, read_image, read_mask,
                             write_image, write_mask)
from mae_dbp.data.split import check_fraction, pick
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import prepare_output


def tile_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Start offsets (px) of the tiles along one axis of ``length`` px; the last ends at the border."""
    if length < tile:
        raise ValueError(f"length {length} is smaller than the tile {tile}")
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def split_sources(count: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean (count,) array, True for validation sources: ``round(val_fraction * count)`` of them,
    at least 1 when ``val_fraction > 0`` and at least 1 training source unless ``val_fraction == 1``
    (:func:`mae_dbp.data.split.pick`)."""
    check_fraction(val_fraction, "--val-fraction", low_open=False, high_open=False)
    is_val = np.zeros(count, dtype=bool)
    is_val[pick(count, val_fraction, seed, keep_one_out=val_fraction < 1)] = True
    return is_val


def split_warning(counts: dict[str, int], val_fraction: float) -> str | None:
    """One line when a split of :func:`tile` came out empty (e.g. one source image), else None."""
    for split, other in (("val", "train"), ("train", "val")):
        if counts[split] == 0:
            return (f"0 {split} tiles ({counts[other]} {other}) with --val-fraction {val_fraction}: "
                    f"{'validation needs at least 2 source images and a fraction > 0' if split == 'val' else 'nothing to train on'}")
    return None


def _tile_suffix(path: Path) -> str:
    return ".tif" if path.suffix.lower() in (".tif", ".tiff") else ".png"


def tile(directory: Path | str, out: Path | str, tile: int, overlap: int = 0, val_fraction: float = 0.1,
         seed: int = 0, force: bool = False, progress: bool = True) -> dict[str, int]:
    """Tile ``DIR/images`` (and ``DIR/masks``) into ``OUT/train`` and ``OUT/val``.

    ``tile`` and ``overlap`` are in px. Returns the number of tiles per split.
    """
    from tqdm import tqdm

    root = Path(directory)
    if tile < 1 or not 0 <= overlap < tile:
        raise UserInputError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    image_dir = image_folder(root)
    images = list_images(image_dir)
    has_masks = mask_folder(root) is not None
    for path in images:  # fail before writing anything
        if has_masks and not mask_path_for(root, path).is_file():
            raise UserInputError(f"{mask_path_for(root, path)}: missing mask for image {path}")
    out = prepare_output(out, ("train", "val", CLASSES_FILE, "split.json"), force=force)
    is_val = split_sources(len(images), val_fraction, seed)
    counts = {"train": 0, "val": 0}
    sources: dict[str, list[str]] = {"train": [], "val": []}
    for path, val in zip(tqdm(images, desc="tile", unit="img", disable=not progress), is_val):
        split = "val" if val else "train"
        image = read_image(path)
        _, h, w = image.shape
        mask = read_mask(mask_path_for(root, path)) if has_masks else None
        if mask is not None and mask.shape != (h, w):
            raise UserInputError(f"{mask_path_for(root, path)}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is {h}x{w}")
        if h < tile or w < tile:
            raise UserInputError(f"{path}: image is {h}x{w}, smaller than the tile {tile} px")
        relative = path.relative_to(image_dir).with_suffix("")
        stem = "__".join(relative.parts)  # sub-folders flattened into the tile name
        for y in tile_starts(h, tile, overlap):
            for x in tile_starts(w, tile, overlap):
                name = f"{stem}_y{y:05d}_x{x:05d}"
                write_image(out / split / "images" / (name + _tile_suffix(path)), image[:, y:y + tile, x:x + tile])
                if mask is not None:
                    write_mask(out / split / "masks" / (name + ".png"), mask[y:y + tile, x:x + tile])
                counts[split] += 1
        sources[split].append(relative.as_posix())
        del image, mask
    if (root / CLASSES_FILE).is_file():
        for target in (out, out / "train", out / "val"):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / CLASSES_FILE, target / CLASSES_FILE)
    info = {"tile": tile, "overlap": overlap, "val_fraction": val_fraction, "seed": seed, "tiles": counts, "sources": sources}
    (out / "split.json").write_text(json.dumps(info, indent=1))
    return counts
