"""Tests of mae_dbp.data.io: image/mask reading and writing, folder listing, classes.yaml, stats.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mae_dbp.data.io import (
    check_mask_values, image_folder, list_images, mask_folder, mask_path_for, mask_value_problem, read_classes,
    read_header, read_image, read_mask, read_stats, write_classes, write_image, write_mask,
)
from mae_dbp.errors import UserInputError


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("name, shape, dtype", [
    ("two.tif", (2, 17, 23), np.uint16),
    ("one.tif", (1, 17, 23), np.uint16),
    ("four.tiff", (4, 9, 11), np.uint8),
    ("rgb.tif", (3, 9, 11), np.uint8),
    ("float.tif", (2, 9, 11), np.float32),
    ("gray.png", (1, 17, 23), np.uint8),
    ("gray16.png", (1, 17, 23), np.uint16),
    ("rgb.png", (3, 17, 23), np.uint8),
])
def test_write_read_round_trip_keeps_values_and_dtype(tmp_path, name, shape, dtype):
    array = _random(shape, dtype)
    write_image(tmp_path / name, array)
    back = read_image(tmp_path / name, channels=shape[0])
    assert back.shape == shape and back.dtype == dtype
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_pil_modes_give_channel_counts(tmp_path, mode, channels):
    hwc = _random((12, 10, channels), np.uint8)
    Image.fromarray(hwc[..., 0] if channels == 1 else hwc, mode=None).convert(mode).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.shape == (channels, 12, 10) and image.dtype == np.uint8


def test_jpeg_reads_as_three_channels(tmp_path):
    Image.fromarray(_random((16, 16, 3), np.uint8)).save(tmp_path / "x.jpg")
    assert read_image(tmp_path / "x.jpg").shape == (3, 16, 16)


def test_planar_tiff_pages_read_as_channels(tmp_path):
    import tifffile

    array = _random((2, 8, 9), np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", array)  # two pages, channels first
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), array)


def test_wrong_channel_count_names_the_file(tmp_path):
    write_image(tmp_path / "a.tif", _random((3, 8, 8), np.uint16))
    with pytest.raises(UserInputError, match=r"a\.tif: expected 2 channels, found 3"):
        read_image(tmp_path / "a.tif", channels=2)


@pytest.mark.parametrize("name", ["garbage.tif", "garbage.png", "garbage.jpg"])
def test_garbage_bytes_give_one_line_error_naming_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(UserInputError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read image (") and "\n" not in message


@pytest.mark.parametrize("name, array", [
    ("cut.tif", _random((2, 64, 64), np.uint16)),
    ("cut.png", _random((1, 64, 64), np.uint16)),
])
def test_truncated_files_give_error_naming_file(tmp_path, name, array):
    full = tmp_path / ("full" + name[3:])
    write_image(full, array)
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match=rf"{name}: cannot read image"):
        read_image(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.tif: cannot read image \(file does not exist\)"):
        read_image(tmp_path / "nope.tif")


def test_png_refuses_two_channels(tmp_path):
    with pytest.raises(UserInputError, match=r"x\.png: PNG holds"):
        write_image(tmp_path / "x.png", _random((2, 4, 4), np.uint8))


def test_list_images_sorted_recursive_and_errors(tmp_path):
    for name in ["b.tif", "a.PNG", "sub/c.jpeg", "notes.txt", ".hidden.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.PNG", "b.tif", "sub/c.jpeg"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.PNG", "b.tif"]
    with pytest.raises(UserInputError, match=f"data folder {tmp_path / 'missing'} does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match=rf"no images \(png/jpg/tif\) in {tmp_path / 'empty'}"):
        list_images(tmp_path / "empty")


def test_masks_round_trip_plain_and_palette(tmp_path):
    mask = np.random.default_rng(0).integers(0, 5, (20, 30)).astype(np.uint8)
    mask[0, 0] = 255
    write_mask(tmp_path / "m.png", mask)
    write_mask(tmp_path / "p.png", mask, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]])
    for name in ("m.png", "p.png"):
        back = read_mask(tmp_path / name)
        assert back.dtype == np.uint8 and back.shape == (20, 30)
        np.testing.assert_array_equal(back, mask)


def test_mask_errors_name_the_file(tmp_path):
    Image.fromarray(_random((5, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserInputError, match=r"rgb\.png: a mask must have 1 channel"):
        read_mask(tmp_path / "rgb.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserInputError, match=r"bad\.png: cannot read mask"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(UserInputError, match=r"m\.png: mask values must be in 0\.\.255"):
        write_mask(tmp_path / "m.png", np.full((3, 3), 300))


def test_classes_yaml_round_trip_and_errors(tmp_path):
    write_classes(tmp_path, ["background", "wire", "ball", "wedge", "epoxy"])
    info = read_classes(tmp_path)
    assert info["classes"] == ["background", "wire", "ball", "wedge", "epoxy"]
    assert len(info["palette"]) == 5 and info["ignore_index"] == 255
    (tmp_path / "classes.yaml").write_text("names: [a, b]\n")
    with pytest.raises(UserInputError, match=r"classes\.yaml: key 'classes'"):
        read_classes(tmp_path)
    (tmp_path / "classes.yaml").write_text("classes: [a, b]\npalette: [[0, 0, 0]]\n")
    with pytest.raises(UserInputError, match=r"classes\.yaml: key 'palette'"):
        read_classes(tmp_path)
    with pytest.raises(UserInputError, match=r"classes\.yaml does not exist"):
        read_classes(tmp_path / "elsewhere")


def test_read_stats(tmp_path):
    assert read_stats(tmp_path) is None
    (tmp_path / "stats.json").write_text(json.dumps({"mean": [1, 2], "std": [3, 4], "channels": 2}))
    assert read_stats(tmp_path)["std"] == [3.0, 4.0]
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(UserInputError, match=r"stats\.json: invalid stats file"):
        read_stats(tmp_path)


def test_mask_path_for_mirrors_subfolders(tmp_path):
    assert mask_path_for(tmp_path, tmp_path / "images" / "a" / "x.tif") == tmp_path / "masks" / "a" / "x.png"
    assert mask_path_for(tmp_path, tmp_path / "images" / "y.tiff") == tmp_path / "masks" / "y.png"


# ---------------------------------------------------------------- non-finite pixels, headers, layout


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_float_pixel_is_an_error_naming_file_and_position(tmp_path, value):
    image = _random((2, 6, 7), np.float32)
    image[1, 4, 5] = value
    write_image(tmp_path / "bad.tif", image)
    with pytest.raises(UserInputError, match=r"bad\.tif: 1 NaN/Inf pixel \(first at channel 1, row 4, column 5\)"):
        read_image(tmp_path / "bad.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "bad.tif", finite=False), image)  # opt-out keeps it


def test_integer_images_skip_the_finite_check(tmp_path):
    write_image(tmp_path / "ok.tif", _random((2, 6, 7), np.uint16))
    assert read_image(tmp_path / "ok.tif").dtype == np.uint16


@pytest.mark.parametrize("name, shape, dtype", [
    ("a.png", (1, 5, 7), np.uint8), ("b.png", (3, 5, 7), np.uint8), ("c.png", (1, 5, 7), np.uint16),
    ("d.tif", (2, 5, 7), np.uint16), ("e.tif", (1, 5, 7), np.float32), ("f.jpg", (3, 5, 7), np.uint8),
    ("g.tif", (4, 5, 7), np.float32),
])
def test_header_agrees_with_full_read(tmp_path, name, shape, dtype):
    write_image(tmp_path / name, _random(shape, dtype))
    header, array = read_header(tmp_path / name), read_image(tmp_path / name)
    assert (header.channels, header.height, header.width, header.dtype) == (*array.shape, str(array.dtype))


def test_header_of_palette_png_and_bad_file(tmp_path):
    Image.fromarray(np.zeros((5, 7), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_header(tmp_path / "p.png").channels == read_image(tmp_path / "p.png").shape[0]
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(UserInputError, match=r"junk\.png: cannot read image"):
        read_header(tmp_path / "junk.png")


def test_image_and_mask_folder_rule(tmp_path):
    assert image_folder(tmp_path) == tmp_path and mask_folder(tmp_path) is None
    (tmp_path / "images").mkdir()
    assert image_folder(tmp_path) == tmp_path / "images" and mask_folder(tmp_path) is None
    (tmp_path / "masks").mkdir()
    assert mask_folder(tmp_path) == tmp_path / "masks"


def test_mask_value_problem_against_a_set_reference():
    rng = np.random.default_rng(0)
    for trial in range(20):
        mask = rng.integers(-2, 12, (9, 9))
        num_classes, ignore = int(rng.integers(1, 8)), int(rng.integers(0, 12))
        bad = sorted(set(mask.ravel().tolist()) - set(range(num_classes)) - {ignore})
        problem = mask_value_problem(mask, num_classes, ignore)
        if not bad:
            assert problem is None
        else:
            assert problem.startswith("mask values " + ", ".join(map(str, bad[:10])))
    with pytest.raises(UserInputError, match=r"m\.png: mask values 9 are neither classes 0\.\.2"):
        check_mask_values(np.array([[0, 9]]), 3, 255, "m.png")
