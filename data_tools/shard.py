"""``mae-dbp data shard FOLDER --out DIR``: WebDataset tar shards of the raw images (or tiles).

Each sample is ``<key>.tiff`` — the image's (or tile's) pixels in the file's own dtype, as an
uncompressed contiguous TIFF, so the training reader cuts crop windows straight from the bytes; a
whole pyramidal image (``mae-dbp data pyramid``) keeps its reduced levels — and
``<key>.json`` (source file relative to FOLDER, tile position and shape). Samples are written in a
seeded random order, so one shard mixes many source images (and the tiles of one image spread over
shards); ``DIR/manifest.json`` lists every shard's sample count and keys
(:mod:`mae_dbp.data.shards`). Shards are written atomically (``mae_dbp.files``), the manifest
last. Tiles follow ``mae-dbp data tile``'s grid (the last tile aligned to the border).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from data_tools.tile import tile_starts
from mae_dbp.data.io import image_folder, list_images, read_header, write_tiff
from mae_dbp.data.shards import FORMAT, IMAGE_EXT, MANIFEST, META_EXT, webdataset
from mae_dbp.data.window import open_window
from mae_dbp.errors import UserInputError
from mae_dbp.files import atomic_write, write_json
from mae_dbp.run_dir import prepare_output


def tiff_bytes(window_chw: np.ndarray, levels: Sequence[np.ndarray] = ()) -> bytes:
    """A ``(C, h, w)`` array (and its reduced ``levels``) as the bytes of an uncompressed contiguous
    TIFF (:func:`mae_dbp.data.io.write_tiff`)."""
    buffer = io.BytesIO()
    write_tiff(buffer, window_chw, levels)
    return buffer.getvalue()


def plan_samples(folder: Path, tile: int | None, overlap: int = 0) -> tuple[list[tuple[Path, str, int, int, int, int]], int, str]:
    """Every sample ``(path, key, top, left, h, w)`` of the images under ``folder``, with the common
    channel count and dtype (headers only). Keys have no dots (WebDataset splits keys at the first)."""
    root = image_folder(folder)
    samples, kinds = [], set()
    for path in list_images(root):
        header = read_header(path)
        kinds.add((header.channels, header.dtype))
        if len(kinds) > 1:
            raise UserInputError(f"{path}: {header.channels} x {header.dtype}, but earlier images are "
                                 f"{'/'.join(f'{c} x {d}' for c, d in sorted(kinds - {(header.channels, header.dtype)}))}; "
                                 "shards hold one kind of image")
        stem = "__".join(path.relative_to(root).with_suffix("").parts).replace(".", "_")
        if tile is None:
            samples.append((path, stem, 0, 0, header.height, header.width))
            continue
        if header.height < tile or header.width < tile:
            raise UserInputError(f"{path}: image is {header.height}x{header.width}, smaller than the tile {tile} px")
        for y in tile_starts(header.height, tile, overlap):
            for x in tile_starts(header.width, tile, overlap):
                samples.append((path, f"{stem}_y{y:05d}_x{x:05d}", y, x, tile, tile))
    (channels, dtype), = kinds
    return samples, channels, dtype


def write_shards(folder: Path | str, out: Path | str, tile: int | None = None, overlap: int = 0,
                 shard_mb: float = 512.0, seed: int = 0, force: bool = False, progress: bool = True) -> dict:
    """Write the shards and the manifest of ``folder`` into ``out``; returns the manifest.

    ``tile`` / ``overlap`` in px (None: whole images); ``shard_mb``: about this many MB of pixels
    per shard (at least one sample each).
    """
    from tqdm import tqdm

    if tile is not None and (tile < 1 or not 0 <= overlap < tile):
        raise UserInputError(f"need --tile >= 1 and 0 <= --overlap < --tile, got tile={tile}, overlap={overlap}")
    if shard_mb <= 0:
        raise UserInputError(f"--shard-size: expected MB > 0, got {shard_mb}")
    wds = webdataset()
    folder = Path(folder)
    samples, channels, dtype = plan_samples(folder, tile, overlap)
    sample_bytes = samples[0][4] * samples[0][5] * channels * np.dtype(dtype).itemsize
    per_shard = max(1, int(shard_mb * 1e6 // sample_bytes))
    count = math.ceil(len(samples) / per_shard)
    names = [f"shard-{i:05d}.tar" for i in range(count)]
    out = Path(out)
    stale = tuple(p.name for p in out.glob("shard-*.tar")) if out.is_dir() else ()
    out = prepare_output(out, (MANIFEST, *sorted(set(names) | set(stale))), force=force)
    order = np.random.default_rng(seed).permutation(len(samples))
    root, entries = image_folder(folder), []
    bar = tqdm(total=len(samples), desc="shard", unit="sample", disable=not progress)
    for number, name in enumerate(names):
        chosen = [samples[i] for i in order[number * per_shard:(number + 1) * per_shard]]

        def write(temporary: Path, chosen=chosen) -> None:
            with wds.TarWriter(str(temporary)) as writer:
                for path, key, top, left, h, w in chosen:
                    with open_window(path, channels) as reader:
                        pixels = np.asarray(reader.read(top, left, h, w))
                        whole_levels = reader.levels if tile is None else []  # a pyramid's levels stay with it
                        levels = [np.asarray(level.read(0, 0, *level.shape[1:])) for level in whole_levels]
                    meta = {"source": path.relative_to(root).as_posix(), "top": top, "left": left,
                            "shape": [channels, h, w], "dtype": dtype}
                    writer.write({"__key__": key, IMAGE_EXT: tiff_bytes(pixels, levels), META_EXT: json.dumps(meta).encode()})
                    bar.update()

        atomic_write(out / name, write)
        entries.append({"name": name, "count": len(chosen), "keys": [s[1] for s in chosen]})
    bar.close()
    manifest = {"format": FORMAT, "samples": len(samples), "channels": channels, "dtype": dtype, "tile": tile,
                "overlap": overlap if tile else 0, "source": str(folder), "seed": seed, "shards": entries}
    write_json(out / MANIFEST, manifest)
    return manifest

