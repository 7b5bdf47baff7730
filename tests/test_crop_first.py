"""Crop-first reads: windows of every stored layout equal the whole decoded image's, and the
crop-first training transform equals the whole-image torchvision path for the same random draws."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from torchvision.transforms import v2

from mae_dbp.config import DataConfig
from mae_dbp.data.crops import CropFirst, draw_box
from mae_dbp.data.dataset import ImageFolderDataset, train_val_datasets
from mae_dbp.data.io import read_image, write_image
from mae_dbp.data.transforms import build_transform
from mae_dbp.data.window import open_window
from mae_dbp.errors import UserInputError

MEAN, STD = [30000.0, 20000.0], [9000.0, 12000.0]


def _image(channels: int = 2, h: int = 150, w: int = 130, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """Smooth structure plus noise (C, H, W), so a wrong window or a shifted crop shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 20000 + 15000 * np.sin(y / 7.0)[None] * np.cos(x / 11.0)[None] + rng.normal(0, 3000, (channels, h, w))
    top = np.iinfo(dtype).max
    return np.clip(base * (top / 65535), 0, top).astype(dtype)


def _write(path, image: np.ndarray, **tiff) -> None:
    if tiff:
        data = np.moveaxis(image, 0, -1) if image.shape[0] > 1 and tiff.get("planarconfig") != "separate" else image
        data = data[0] if image.shape[0] == 1 else data
        tifffile.imwrite(path, data, photometric="minisblack", **tiff)
    else:
        write_image(path, image)


LAYOUTS = {  # name: (file, channels, dtype, tifffile options, expected reader kind)
    "contiguous": ("a.tif", 2, np.uint16, {}, "memmap"),
    "one channel": ("g.tif", 1, np.uint16, {}, "memmap"),
    "tiled zlib": ("t.tif", 2, np.uint16, {"tile": (64, 48), "compression": "zlib", "planarconfig": "contig"}, "segments"),
    "tiled raw": ("r.tif", 2, np.uint16, {"tile": (32, 32), "planarconfig": "contig"}, "segments"),
    "strips zlib": ("s.tif", 2, np.uint16, {"rowsperstrip": 9, "compression": "zlib", "planarconfig": "contig"}, "segments"),
    "planar tiles": ("p.tif", 3, np.uint16, {"tile": (32, 64), "planarconfig": "separate"}, "segments"),
    "png 16-bit": ("b.png", 1, np.uint16, {}, "full"),
    "png 8-bit": ("c.png", 3, np.uint8, {}, "full"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_windows_equal_the_whole_decoded_image(tmp_path, layout):
    name, channels, dtype, options, kind = LAYOUTS[layout]
    image = _image(channels, dtype=dtype)
    _write(tmp_path / name, image, **options)
    whole = read_image(tmp_path / name)
    assert np.array_equal(whole, image)
    with open_window(tmp_path / name, channels) as reader:
        assert reader.kind == kind and reader.shape == image.shape and reader.dtype == image.dtype
        for top, left, h, w in [(0, 0, 150, 130), (37, 51, 100, 77), (149, 129, 1, 1), (64, 0, 33, 130), (5, 96, 140, 34)]:
            window = reader.read(top, left, h, w)
            assert window.dtype == image.dtype and np.array_equal(window, image[:, top:top + h, left:left + w])
        with pytest.raises(ValueError):
            reader.read(100, 100, 60, 10)  # beyond the bottom


def test_bytes_read_count_only_the_window(tmp_path):
    image = _image(2, 256, 256)
    _write(tmp_path / "a.tif", image)
    _write(tmp_path / "t.tif", image, tile=(64, 64), planarconfig="contig")
    with open_window(tmp_path / "a.tif") as flat, open_window(tmp_path / "t.tif") as tiled:
        flat.read(10, 20, 60, 40)
        tiled.read(10, 20, 60, 40)  # rows 10-69, columns 20-59: 2 x 1 tiles of 64 x 64 px x 2 channels x 2 bytes
        assert flat.bytes_read == 60 * 40 * 2 * 2
        assert tiled.bytes_read == 2 * 64 * 64 * 2 * 2
    _write(tmp_path / "planar.tif", image, planarconfig="separate")  # contiguous CHW planes
    for name, pixel, row, plane in (("a.tif", 4, 256 * 4, 0), ("planar.tif", 2, 256 * 2, 256 * 256 * 2)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            offset = tif.series[0].dataoffset
        pages = {(offset + c * plane + r * row + 20 * pixel + b) // 4096  # every byte of the window, by brute force
                 for c in range(1 if plane == 0 else 2) for r in range(10, 70) for b in range(40 * pixel)}
        with open_window(tmp_path / name) as reader:
            assert reader.kind == "memmap"
            reader.read(10, 20, 60, 40)
            assert reader.bytes_read == 60 * 40 * 2 * 2 and reader.pages_read == len(pages) * 4096
    png = tmp_path / "b.png"
    _write(png, image[:1])
    with open_window(png) as whole:
        whole.read(0, 0, 5, 5)
        assert whole.bytes_read == png.stat().st_size


def test_draw_box_is_torchvisions_random_resized_crop_rule():
    """Same RNG state, same box as torchvision's own make_params (also in the fallback cases)."""
    for seed in range(100):
        height, width = [(2048, 2048), (90, 400), (400, 90), (7, 1000), (33, 35)][seed % 5]
        scale = [(0.05, 0.5), (0.9, 1.0), (0.2, 1.0)][seed % 3]
        torch.manual_seed(seed)
        expected = v2.RandomResizedCrop(8, scale=scale).make_params([torch.empty(0, height, width)])
        torch.manual_seed(seed)
        assert draw_box(height, width, scale) == (expected["top"], expected["left"], expected["height"], expected["width"])
    generator = torch.Generator().manual_seed(3)
    assert draw_box(500, 500, (0.1, 0.2), generator=generator) == draw_box(500, 500, (0.1, 0.2),
                                                                           generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("layout", ["contiguous", "tiled zlib", "png 16-bit"])
def test_crop_first_equals_the_whole_image_transform(tmp_path, layout):
    """torchvision's RandomResizedCrop + flip + normalise on the whole float image vs the window path,
    from the same RNG state: same box, same flip, same pixels to float rounding."""
    name, channels, dtype, options, _ = LAYOUTS[layout]
    image = _image(channels, dtype=dtype)
    _write(tmp_path / name, image, **options)
    mean, std = (MEAN, STD) if channels == 2 else (MEAN[:1] * channels, STD[:1] * channels)
    whole = build_transform(True, 24, mean, std, channels=channels, scale=(0.05, 0.5))
    first = CropFirst(24, mean, std, channels=channels, scale=(0.05, 0.5))
    full = torch.from_numpy(image.astype(np.float32))
    flips = 0
    for seed in range(24):
        torch.manual_seed(seed)
        expected = whole(full)
        torch.manual_seed(seed)
        with open_window(tmp_path / name, channels) as reader:
            got = first.crops(reader, 1)[0]
        assert got.shape == expected.shape == (channels, 24, 24)
        assert torch.allclose(got, expected, atol=1e-4, rtol=0), float((got - expected).abs().max())
        torch.manual_seed(seed)
        draw_box(150, 130, (0.05, 0.5))  # the same draws as the crop, then the flip's
        flips += bool(torch.rand(1) < 0.5)
    assert 4 < flips < 20  # both branches of the flip were compared


def test_train_set_reads_window_first_and_validation_keeps_resize_and_centre_crop(tmp_path):
    for i in range(4):
        _write(tmp_path / f"img{i}.tif", _image(2, 200, 180, seed=i))
    data = DataConfig(root=str(tmp_path), val_fraction=0.25, mean=MEAN, std=STD, crop_scale=[0.05, 0.2])
    train, val = train_val_datasets(data, channels=2, img_size=16)
    assert isinstance(train.transform, CropFirst)
    assert [type(t) for t in val.transform.transforms][:2] == [v2.Resize, v2.CenterCrop]
    train.bytes_read = 0
    for i in range(len(train)):
        assert train[i][0].shape == (2, 16, 16)
    assert train.bytes_read <= len(train) * 0.2 * 200 * 180 * 2 * 2 * 1.1  # windows only (scale <= 0.2)
    whole = ImageFolderDataset(tmp_path, channels=2, transform=build_transform(True, 16, MEAN, STD))
    whole[0]
    assert whole.bytes_read == (tmp_path / "img0.tif").stat().st_size
    data.crop_first = False
    train, _ = train_val_datasets(data, channels=2, img_size=16)
    assert isinstance(train.transform, v2.Compose)


def test_a_window_that_cannot_be_read_names_the_file(tmp_path):
    """A tiled TIFF cut after its header: the header reads, the window's tiles are gone."""
    path = tmp_path / "cut.tif"
    _write(path, _image(2, 128, 128), tile=(32, 32), planarconfig="contig")
    with tifffile.TiffFile(path) as tif:
        start = min(tif.pages[0].dataoffsets)
    path.write_bytes(path.read_bytes()[:start + 10])
    with open_window(path, 2) as reader:
        with pytest.raises(UserInputError, match="cut.tif: cannot read the window"):
            reader.read(40, 40, 30, 30)
    contiguous = tmp_path / "short.tif"
    _write(contiguous, _image(2, 64, 64))
    contiguous.write_bytes(contiguous.read_bytes()[:4000])
    with pytest.raises(UserInputError, match="short.tif: cannot read image"):
        open_window(contiguous, 2)
