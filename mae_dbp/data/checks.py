"""Data that reads fine but would silently train badly: warnings worth one line each.

* 8-bit images mixed into a folder of 16-bit ones (or the other way round): all are normalised
  with the same raw-unit mean/std, so the minority trains as near-black (or saturated) noise.
* Images smaller than the training crop: the transform upsamples them without a word.
* Images many times the training crop without reduced-resolution levels: every crop reads and
  resizes a large full-resolution window, and the loader, not the GPU, sets the pace.

Only file headers are read (:func:`mae_dbp.data.io.read_header`, threads), so checking thousands
of 2048 px TIFFs takes seconds. ``mae-dbp data validate`` and the pretraining dataset builder both
use :func:`header_warnings`.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from mae_dbp.data.io import ImageHeader, read_header
from mae_dbp.errors import UserInputError

BIT_DEPTH = {"uint8": 8, "uint16": 16}


def read_headers(paths: Sequence[Path], workers: int | None = None) -> list[ImageHeader | None]:
    """The header of each path (None for a file whose header cannot be read: the loader names it)."""

    def header(path: Path) -> ImageHeader | None:
        try:
            return read_header(path)
        except UserInputError:
            return None

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(header, paths))


def mixed_depth_warning(paths: Sequence[Path], dtypes: Sequence[str | None]) -> str | None:
    """One line when 8-bit and 16-bit images are mixed: the minority's count and an example file."""
    counts = Counter(d for d in dtypes if d in BIT_DEPTH)
    if len(counts) < 2:
        return None
    (major, _), (minor, n_minor) = counts.most_common(2)
    example = next(p for p, d in zip(paths, dtypes) if d == minor)
    return (f"{n_minor} of {len(paths)} images are {BIT_DEPTH[minor]}-bit among {BIT_DEPTH[major]}-bit ones "
            f"(e.g. {example}): all are normalised with the same raw-unit mean/std, so these train as "
            f"{'near-black' if BIT_DEPTH[minor] < BIT_DEPTH[major] else 'saturated'} images; convert them to "
            f"{BIT_DEPTH[major]}-bit or remove them")


def small_image_warning(paths: Sequence[Path], sizes: Sequence[tuple[int, int] | None], min_size: int,
                        limit: str) -> str | None:
    """One line when images (sizes (H, W) px) are smaller than ``min_size`` px on a side: count and
    an example file; ``limit`` says where the size comes from (e.g. ``"model.img_size=224 px"``)."""
    small = [(p, hw) for p, hw in zip(paths, sizes) if hw is not None and min(hw) < min_size]
    if not small:
        return None
    path, (h, w) = small[0]
    return (f"{len(small)} of {len(paths)} images are smaller than {limit} "
            f"(e.g. {path}, {h}x{w}): they are upsampled to fill the crop")


LARGE = 4  # images whose shorter side is at least this many training crops wide are "large"


def no_levels_warning(paths: Sequence[Path], headers: Sequence[ImageHeader | None], crop: int,
                      limit: str) -> str | None:
    """One line when images at least :data:`LARGE` x ``crop`` px on their shorter side have no
    reduced-resolution levels: count, an example file and the command that writes them."""
    large = [(p, h) for p, h in zip(paths, headers) if h is not None and min(h.height, h.width) >= LARGE * crop]
    bare = [(p, h) for p, h in large if h.levels == 0 and np.issubdtype(np.dtype(h.dtype), np.integer)]
    if not bare:
        return None
    path, header = bare[0]
    return (f"{len(bare)} of {len(paths)} images are at least {LARGE}x {limit} without reduced-resolution levels "
            f"(e.g. {path}, {header.height}x{header.width}): each training crop reads and resizes a full-resolution "
            f"window; mae-dbp data pyramid {path.parent} --out DIR writes pyramidal copies the loader reads "
            f"about 3x faster (docs/history.md)")


def header_warnings(paths: Sequence[Path], min_size: int | None, size_name: str = "model.img_size") -> list[str]:
    """Mixed bit depth, too-small images and large images without levels among ``paths``, one line
    each (empty when all is well).

    ``min_size``: the training crop side in px (None: no size check); ``size_name`` names it.
    """
    paths = [Path(p) for p in paths]
    headers = read_headers(paths)
    lines = [mixed_depth_warning(paths, [h.dtype if h else None for h in headers])]
    if min_size is not None:
        lines.append(small_image_warning(paths, [(h.height, h.width) if h else None for h in headers],
                                         min_size, f"{size_name}={min_size} px"))
        lines.append(no_levels_warning(paths, headers, min_size, f"{size_name}={min_size} px"))
    return [line for line in lines if line]
