"""Pyramidal TIFFs: ``mae-dbp data pyramid`` writes the levels the training filter would make, the
reader exposes every level and maps a crop box onto the coarsest one that still spans enough
pixels, and a crop read from a level stays close to the full-resolution crop."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from data_tools.pyramid import reduced_levels, write_pyramids
from mae_dbp.cli import main
from mae_dbp.config import DataConfig
from mae_dbp.data.crops import CropFirst, draw_box
from mae_dbp.data.io import read_header, read_image, write_image, write_tiff
from mae_dbp.data.transforms import build_transform
from mae_dbp.data.window import open_window
from mae_dbp.errors import UserInputError

MEAN, STD = [30000.0, 20000.0], [9000.0, 12000.0]


def _image(h: int = 256, w: int = 240, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Structure at several scales plus noise, uint16 (C, H, W): a shifted box or a wrong level shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (30000 + 12000 * np.sin(y / 9.0) * np.cos(x / 13.0) + 8000 * np.sin((x + 2 * y) / 41.0))[None]
    base = base + rng.normal(0, 1500, (channels, h, w)) + 3000 * np.arange(channels)[:, None, None]
    return np.clip(base, 0, 65535).astype(np.uint16)


def _levels_by_tifffile(path) -> list[np.ndarray]:
    """Every level of a TIFF as (C, H, W), read by tifffile alone."""
    with tifffile.TiffFile(path) as tif:
        arrays = [level.asarray() for level in tif.series[0].levels]
    return [a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0) for a in arrays]


@pytest.fixture()
def pyramid(tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        write_image(src / "images" / f"img{i}.tif", _image(seed=i))
    (src / "masks").mkdir()
    write_image(src / "masks" / "img0.png", np.zeros((1, 256, 240), np.uint8))
    (src / "classes.yaml").write_text("classes: [background, wire]\n")
    assert main(["data", "pyramid", str(src), "--out", str(tmp_path / "pyr"), "--min-side", "60", "--no-progress"]) == 0
    return src, tmp_path / "pyr"


def test_levels_are_the_image_resized_by_powers_of_two(pyramid):
    src, out = pyramid
    image = read_image(src / "images" / "img0.tif")
    levels = _levels_by_tifffile(out / "images" / "img0.tif")
    assert [level.shape for level in levels] == [(2, 256, 240), (2, 128, 120), (2, 64, 60)]  # 32 x 30 < 60: no more
    assert np.array_equal(levels[0], image)  # level 0 unchanged
    full = torch.from_numpy(image.astype(np.float32))[None]
    for j, level in enumerate(levels[1:], start=1):  # reference: F.interpolate, bicubic, antialiased
        expected = F.interpolate(full, size=level.shape[1:], mode="bicubic", antialias=True, align_corners=False)
        expected = expected[0].round().clamp(0, 65535).numpy().astype(np.uint16)
        assert level.dtype == np.uint16 and np.abs(level.astype(int) - expected.astype(int)).max() <= 1, j
    assert (out / "masks" / "img0.png").is_file() and (out / "classes.yaml").read_text() == (src / "classes.yaml").read_text()
    assert read_header(out / "images" / "img0.tif").levels == 2 and read_header(src / "images" / "img0.tif").levels == 0
    assert np.array_equal(read_image(out / "images" / "img1.tif"), read_image(src / "images" / "img1.tif"))
    with pytest.raises(FileExistsError, match="already exists"):
        write_pyramids(src, out, min_side=60, progress=False)


def test_float_images_and_bad_min_side_are_one_line_errors(tmp_path):
    write_image(tmp_path / "f" / "a.tif", np.ones((1, 64, 64), np.float32))
    with pytest.raises(UserInputError, match=r"a.tif: float32 pixels"):
        write_pyramids(tmp_path / "f", tmp_path / "out", progress=False)
    with pytest.raises(UserInputError, match="--min-side"):
        write_pyramids(tmp_path / "f", tmp_path / "out2", min_side=0, progress=False)
    with pytest.raises(UserInputError, match="data.level_gap"):
        DataConfig(level_gap=0.5)


@pytest.mark.parametrize("tiled", [False, True], ids=["contiguous", "tiled"])
def test_every_level_reads_its_stored_pixels(tmp_path, tiled):
    image = _image(200, 168)
    levels = reduced_levels(image, 40)
    path = tmp_path / "p.tif"
    if tiled:  # another writer's layout: tiled levels (read segment-wise)
        with tifffile.TiffWriter(path) as tiff:
            tiff.write(np.moveaxis(image, 0, -1), subifds=len(levels), tile=(32, 32), photometric="minisblack",
                       planarconfig="contig")
            for level in levels:
                tiff.write(np.moveaxis(level, 0, -1), subfiletype=1, tile=(32, 32), photometric="minisblack",
                           planarconfig="contig")
    else:
        write_tiff(path, image, levels)
    stored = _levels_by_tifffile(path)
    with open_window(path, 2) as reader:
        assert reader.kind == ("segments" if tiled else "memmap")
        assert [reader.shape] + [level.shape for level in reader.levels] == [a.shape for a in stored]
        for level, expected in zip([reader, *reader.levels], stored):
            _, h, w = level.shape
            for top, left, wh, ww in [(0, 0, h, w), (h // 3, w // 5, h // 2, w // 3), (h - 1, w - 1, 1, 1)]:
                assert np.array_equal(level.read(top, left, wh, ww), expected[:, top:top + wh, left:left + ww])


def test_level_for_picks_the_coarsest_level_that_spans_enough_pixels(tmp_path):
    path = tmp_path / "p.tif"
    image = _image(256, 256)
    write_tiff(path, image, reduced_levels(image, 32))  # 128, 64, 32 px levels
    with open_window(path, 2) as reader:
        assert [level.shape[1] for level in reader.levels] == [128, 64, 32]
        level, box = reader.level_for(10, 21, 150, 101, min_side=24)  # 101 / 4 = 25.25 >= 24; / 8 < 24
        assert level is reader.levels[1] and box == (3, 5, 37, 26)  # round(10/4), round(21/4), round(160/4) - 3, round(122/4) - 5
        level, box = reader.level_for(10, 21, 150, 101, min_side=120)  # 101 px < 120 already: full resolution
        assert level is reader and box == (10, 21, 150, 101)
        level, box = reader.level_for(0, 0, 256, 256, min_side=1)
        assert level is reader.levels[2] and box == (0, 0, 32, 32)
        before = reader.bytes_read
        level.read(*box)
        assert reader.bytes_read - before == 32 * 32 * 2 * 2  # only the coarse window is read


def _resized(window: np.ndarray, size: int, flip: bool) -> torch.Tensor:
    """Reference finish: F.interpolate (bicubic, antialiased), flip, normalise."""
    out = F.interpolate(torch.from_numpy(window.astype(np.float32))[None], size=(size, size), mode="bicubic",
                        antialias=True, align_corners=False)[0]
    out = out.flip(-1) if flip else out
    return (out - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_crops_from_levels_stay_close_to_full_resolution(tmp_path):
    """Same RNG draws: with level_gap None a pyramid reads as before (equal to torchvision's
    whole-image path); with a gap each crop is the level window resized (checked by hand) and
    within a few percent of the full-resolution crop of the same (grid-snapped) box, while the
    box left unmapped on the level is far off."""
    path = tmp_path / "p.tif"
    image = _image(512, 512)
    write_tiff(path, image, reduced_levels(image, 64))
    whole = build_transform(True, 32, MEAN, STD, channels=2, scale=(0.1, 0.6))
    full_res = CropFirst(32, MEAN, STD, channels=2, scale=(0.1, 0.6))
    leveled = CropFirst(32, MEAN, STD, channels=2, scale=(0.1, 0.6), level_gap=1.5)
    float_image = torch.from_numpy(image.astype(np.float32))
    used, errors, unmapped = set(), [], []
    with open_window(path, 2) as reader:
        for seed in range(16):
            torch.manual_seed(seed)
            expected = whole(float_image)
            torch.manual_seed(seed)
            assert torch.allclose(full_res.crops(reader, 1)[0], expected, atol=1e-4, rtol=0)
            torch.manual_seed(seed)
            got = leveled.crops(reader, 1)[0]
            torch.manual_seed(seed)
            drawn = draw_box(512, 512, (0.1, 0.6))
            level, (top, left, h, w) = reader.level_for(*drawn, min_side=48)
            flip = bool(torch.rand(1) < 0.5)
            assert torch.allclose(got, _resized(level.read(top, left, h, w), 32, flip), atol=1e-4, rtol=0)
            s = 512 // level.shape[1]
            used.add(s)
            if s == 1:
                continue
            snapped = _resized(reader.read(top * s, left * s, h * s, w * s), 32, flip)
            errors.append(float((got - snapped).pow(2).mean().sqrt() / snapped.std()))
            off = min(drawn[0], level.shape[1] - h), min(drawn[1], level.shape[2] - w)  # the full-res corner, unscaled
            if abs(off[0] - top) + abs(off[1] - left) >= 8:
                wrong = _resized(level.read(*off, h, w), 32, flip)
                unmapped.append(float((wrong - snapped).pow(2).mean().sqrt() / snapped.std()))
    assert len(used - {1}) >= 2, used  # crops came from more than one reduced level
    assert max(errors) < 0.05, errors
    assert len(unmapped) >= 4 and min(unmapped) > 0.1 and max(errors) < min(unmapped) / 3, (errors, unmapped)


def test_a_rewritten_file_is_parsed_again(tmp_path):
    """The layout cache is keyed by path, modification time and size: a replaced file is re-read."""
    path = tmp_path / "a.tif"
    write_tiff(path, _image(64, 64))
    with open_window(path, 2) as reader:
        assert reader.shape == (2, 64, 64) and not reader.levels
    image = _image(96, 80, seed=5)
    write_tiff(path, image, reduced_levels(image, 20))
    os.utime(path, ns=(1, 1))  # even with an old modification time the size differs
    with open_window(path, 2) as reader:
        assert reader.shape == (2, 96, 80) and len(reader.levels) == 2
        assert np.array_equal(reader.read(0, 0, 96, 80), image)


def test_shards_of_a_pyramid_keep_the_levels(pyramid, tmp_path):
    from data_tools.shard import write_shards
    from mae_dbp.data.shards import open_shards, shard_samples

    _, out = pyramid
    write_shards(out, tmp_path / "shards", progress=False)
    for shard in open_shards(str(tmp_path / "shards")).shards:
        for key, data in shard_samples(shard):
            stored = _levels_by_tifffile(out / "images" / f"{key}.tif")
            with open_window(data, 2, name=key) as reader:
                assert len(reader.levels) == len(stored) - 1
                for level, expected in zip([reader, *reader.levels], stored):
                    assert np.array_equal(level.read(0, 0, *level.shape[1:]), expected)


def test_large_images_without_levels_get_one_hint(pyramid):
    from mae_dbp.data.checks import header_warnings

    src, out = pyramid
    lines = header_warnings(sorted((src / "images").glob("*.tif")), 32)  # 240 px >= 4 x 32, no levels
    assert len(lines) == 1 and lines[0].startswith("2 of 2 images are at least 4x model.img_size=32 px without")
    assert "img0.tif, 256x240" in lines[0] and f"mae-dbp data pyramid {src / 'images'} --out" in lines[0]
    assert header_warnings(sorted((out / "images").glob("*.tif")), 32) == []  # the pyramid copies have levels
    assert header_warnings(sorted((src / "images").glob("*.tif")), 64) == []  # 240 px < 4 x 64: not large
