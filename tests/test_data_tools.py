"""Tests of data_tools: synthetic data, validation, tiling, statistics, subsets and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_tools.stats import compute_stats
from data_tools.subsets import ade20k_subset, imagenet_subset
from data_tools.synthetic import generate_sample, write_synthetic
from data_tools.tile import split_sources, tile, tile_starts
from data_tools.validate import validate
from mae_dbp.cli import main
from mae_dbp.data.io import read_classes, read_image, read_mask, write_classes, write_image, write_mask
from mae_dbp.errors import UserInputError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A small synthetic industrial folder (6 images of 2 x 64 x 64 uint16), built once."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "set", num=6, size=64, seed=3, progress=False)


def _industrial(root, sizes, channels=2, seed=0):
    """A labelled folder with images of the given (H, W) sizes and masks in 0..2."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        write_image(root / "images" / f"img{i}.tif", rng.integers(0, 65535, (channels, h, w)).astype(np.uint16))
        write_mask(root / "masks" / f"img{i}.png", rng.integers(0, 3, (h, w)))
    write_classes(root, ["background", "wire", "ball"])
    return root


# ---------------------------------------------------------------- synthetic


def test_synthetic_sample_shape_dtype_and_determinism():
    a_img, a_mask = generate_sample(64, np.random.default_rng(7))
    b_img, b_mask = generate_sample(64, np.random.default_rng(7))
    c_img, _ = generate_sample(64, np.random.default_rng(8))
    assert a_img.shape == (2, 64, 64) and a_img.dtype == np.uint16
    assert a_mask.shape == (64, 64) and a_mask.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_img[0], a_img[1])  # second channel is another view, not a copy


def test_synthetic_all_classes_appear_and_channels_differ():
    seen = set()
    for seed in range(3):
        image, mask = generate_sample(96, np.random.default_rng(seed))
        seen |= set(np.unique(mask).tolist())
        assert image.max() > 10000 and image.std(axis=(1, 2)).min() > 500
        assert abs(np.corrcoef(image[0].ravel(), image[1].ravel())[0, 1]) < 0.99
    assert seen == {0, 1, 2, 3, 4}


def test_write_synthetic_layout_seeded_and_guarded(synth, tmp_path):
    assert sorted(p.name for p in (synth / "images").iterdir())[0] == "synth_00000.tif"
    assert len(list((synth / "masks").glob("*.png"))) == 6
    assert read_classes(synth)["classes"] == ["background", "wire", "ball", "wedge", "epoxy"]
    again = write_synthetic(tmp_path / "again", num=2, size=64, seed=3, progress=False)
    np.testing.assert_array_equal(read_image(again / "images" / "synth_00001.tif"), read_image(synth / "images" / "synth_00001.tif"))
    with pytest.raises(FileExistsError, match="again/images already exists"):
        write_synthetic(again, num=1, size=64, progress=False)
    write_synthetic(again, num=1, size=64, progress=False, force=True)
    assert len(list((again / "images").iterdir())) == 1


# ---------------------------------------------------------------- validate


def test_validate_clean_folder(synth):
    report = validate(synth, channels=2, bit_depth=16, size=64)
    assert report.ok, report.problem_lines()
    assert report.num_images == 6 and report.num_masks == 6 and "6 images" in report.summary()


def test_validate_reports_each_bad_file(tmp_path):
    root = _industrial(tmp_path / "d", [(16, 16)] * 6)
    (root / "images" / "img0.tif").write_bytes(b"garbage" * 9)  # corrupt image
    write_image(root / "images" / "img1.tif", np.zeros((3, 16, 16), np.uint16))  # wrong channels
    write_mask(root / "masks" / "img2.png", np.zeros((8, 16)))  # mask size mismatch
    write_mask(root / "masks" / "img3.png", np.full((16, 16), 7))  # value outside classes
    (root / "masks" / "img4.png").unlink()  # missing mask
    write_image(root / "images" / "img5.tif", np.zeros((2, 16, 16), np.uint8))  # 8-bit
    write_mask(root / "masks" / "orphan.png", np.zeros((16, 16)))
    lines = validate(root, channels=2, bit_depth=16).problem_lines()
    expected = {
        "images/img0.tif: cannot read image", "images/img1.tif: expected 2 channels, found 3",
        "masks/img2.png: mask is 8x16 but its image is 16x16", "masks/img3.png: mask values 7 are neither",
        "masks/img4.png: missing mask", "images/img5.tif: expected 16-bit", "masks/orphan.png: mask without an image",
    }
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    assert all(line.startswith(str(root)) for line in lines) and len(lines) == len(expected)


def test_validate_ignore_index_allowed_and_missing_classes_yaml(tmp_path):
    root = _industrial(tmp_path / "d", [(8, 8)])
    write_mask(root / "masks" / "img0.png", np.full((8, 8), 255))
    assert validate(root).ok
    (root / "classes.yaml").unlink()
    assert any("classes.yaml: missing" in line for line in validate(root).problem_lines())


def test_validate_names_nan_files_and_warns_about_silent_problems(tmp_path):
    root = _industrial(tmp_path / "d", [(16, 16)] * 5)
    nan_image = np.zeros((2, 16, 16), np.float32)
    nan_image[1, 2, 3] = np.nan
    write_image(root / "images" / "img0.tif", nan_image)
    write_image(root / "images" / "img1.tif", np.zeros((2, 16, 16), np.uint8))  # 8-bit among 16-bit
    write_image(root / "images" / "img2.tif", np.zeros((2, 12, 16), np.uint16))  # smaller than the rest
    write_mask(root / "masks" / "img2.png", np.zeros((12, 16)))
    report = validate(root)
    assert report.problem_lines() == [f"{root / 'images' / 'img0.tif'}: 1 NaN/Inf pixel (first at channel 1, "
                                      "row 2, column 3); replace them or remove the file"]
    assert len(report.warnings) == 2
    assert report.warnings[0].startswith("1 of 4 images are 8-bit among 16-bit ones") and "img1.tif" in report.warnings[0]
    assert report.warnings[1].startswith("1 of 4 images are smaller than the folder's most common size 16x16")
    assert "img2.tif, 12x16" in report.warnings[1]
    assert "--min-size 8 px" not in " ".join(validate(root, min_size=8).warnings)
    assert any("smaller than --min-size 20 px" in w for w in validate(root, min_size=20).warnings)


def test_validate_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no images .* in .*empty"):
        validate(tmp_path / "empty")
    with pytest.raises(UserInputError, match="missing does not exist"):
        validate(tmp_path / "missing")


# ---------------------------------------------------------------- tile


def test_tile_starts_cover_the_border():
    assert tile_starts(10, 4) == [0, 4, 6]
    assert tile_starts(8, 4) == [0, 4]
    assert tile_starts(10, 4, overlap=1) == [0, 3, 6]
    assert tile_starts(4, 4) == [0]


def test_split_sources_deterministic_and_bounded():
    assert split_sources(10, 0.3, 1).sum() == 3
    np.testing.assert_array_equal(split_sources(10, 0.3, 1), split_sources(10, 0.3, 1))
    assert split_sources(3, 0.01, 0).sum() == 1 and split_sources(1, 0.5, 0).sum() == 0
    assert split_sources(4, 0.0, 0).sum() == 0 and split_sources(4, 1.0, 0).sum() == 4


def test_tile_covers_images_and_never_splits_a_source(tmp_path):
    sizes = [(37, 50), (40, 40), (33, 61), (45, 35), (32, 32)]
    root = _industrial(tmp_path / "d", sizes)
    out = tmp_path / "t"
    counts = tile(root, out, tile=16, overlap=3, val_fraction=0.4, seed=1, progress=False)
    info = json.loads((out / "split.json").read_text())
    assert len(info["sources"]["val"]) == 2 and not set(info["sources"]["train"]) & set(info["sources"]["val"])
    for split in ("train", "val"):
        stems = {p.name.split("_y")[0] for p in (out / split / "images").iterdir()}
        assert stems == set(info["sources"][split])
        assert counts[split] == len(list((out / split / "masks").iterdir()))
        assert read_classes(out / split)["classes"] == ["background", "wire", "ball"]
    for i, (h, w) in enumerate(sizes):  # reassemble each source from its tiles and compare
        image, mask = read_image(root / "images" / f"img{i}.tif"), read_mask(root / "masks" / f"img{i}.png")
        split = "val" if f"img{i}" in info["sources"]["val"] else "train"
        rebuilt = np.zeros_like(image)
        rebuilt_mask = np.full_like(mask, 99)
        for path in (out / split / "images").glob(f"img{i}_*.tif"):
            y, x = int(path.stem.split("_y")[1][:5]), int(path.stem.split("_x")[1])
            piece = read_image(path)
            assert piece.shape == (2, 16, 16)
            rebuilt[:, y:y + 16, x:x + 16] = piece
            rebuilt_mask[y:y + 16, x:x + 16] = read_mask(out / split / "masks" / (path.stem + ".png"))
        np.testing.assert_array_equal(rebuilt, image)
        np.testing.assert_array_equal(rebuilt_mask, mask)


def test_tile_is_deterministic_and_guards_output(tmp_path):
    root = _industrial(tmp_path / "d", [(20, 20)] * 5)
    tile(root, tmp_path / "a", tile=10, val_fraction=0.4, seed=5, progress=False)
    tile(root, tmp_path / "b", tile=10, val_fraction=0.4, seed=5, progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "val" / "images").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b" / "val" / "images").iterdir())
    with pytest.raises(FileExistsError, match="already exists"):
        tile(root, tmp_path / "a", tile=10, progress=False)


def test_tile_errors_name_the_file(tmp_path):
    root = _industrial(tmp_path / "d", [(20, 20), (8, 30)])
    with pytest.raises(UserInputError, match=r"img1\.tif: image is 8x30, smaller than the tile 10"):
        tile(root, tmp_path / "o1", tile=10, val_fraction=0, progress=False)
    root = _industrial(tmp_path / "e", [(20, 20)])
    write_mask(root / "masks" / "img0.png", np.zeros((20, 19)))
    with pytest.raises(UserInputError, match=r"img0\.png: mask is 20x19 but its image is 20x20"):
        tile(root, tmp_path / "o2", tile=10, progress=False)
    (root / "masks" / "img0.png").unlink()
    with pytest.raises(UserInputError, match=r"img0\.png: missing mask"):
        tile(root, tmp_path / "o3", tile=10, progress=False)


# ---------------------------------------------------------------- stats


def test_stats_match_numpy_over_concatenated_pixels(tmp_path):
    root = _industrial(tmp_path / "d", [(13, 17), (20, 9), (31, 31)], channels=3)
    result = compute_stats(root, tmp_path / "stats.json", progress=False)
    pixels = np.concatenate([read_image(p).reshape(3, -1) for p in sorted((root / "images").iterdir())], axis=1)
    np.testing.assert_allclose(result["mean"], pixels.astype(np.float64).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(result["std"], pixels.astype(np.float64).std(axis=1), rtol=1e-10)
    written = json.loads((tmp_path / "stats.json").read_text())
    assert written["channels"] == 3 and written["dtype"] == "uint16" and written["num_images"] == 3
    with pytest.raises(FileExistsError, match="stats.json already exists"):
        compute_stats(root, tmp_path / "stats.json", progress=False)


def test_stats_reject_mixed_channels(tmp_path):
    root = _industrial(tmp_path / "d", [(8, 8), (8, 8)])
    write_image(root / "images" / "img1.tif", np.zeros((1, 8, 8), np.uint16))
    with pytest.raises(UserInputError, match=r"img1\.tif: expected 2 channels, found 1"):
        compute_stats(root, progress=False)


# ---------------------------------------------------------------- subsets


def _imagenet(root, counts):
    for split, per_class in (("train", counts), ("val", {c: 3 for c in counts})):
        for name, n in per_class.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{name}_{i}.JPEG").write_bytes(b"jpeg")
    return root


def test_imagenet_subset_per_class_deterministic(tmp_path):
    src = _imagenet(tmp_path / "in", {"n01": 40, "n02": 25, "n03": 3})
    counts = imagenet_subset(src, tmp_path / "a", 0.1, seed=1)
    chosen = {d.name: sorted(p.name for p in d.iterdir()) for d in (tmp_path / "a" / "train").iterdir()}
    assert {k: len(v) for k, v in chosen.items()} == {"n01": 4, "n02": 2, "n03": 1}
    assert counts == {"train": 7, "val": 9}
    link = next((tmp_path / "a" / "train" / "n01").iterdir())
    assert link.is_symlink() and link.resolve().parent == (src / "train" / "n01").resolve()
    imagenet_subset(src, tmp_path / "b", 0.1, seed=1, mode="list")
    lines = (tmp_path / "b" / "train.txt").read_text().split()
    assert sorted(lines) == sorted(f"train/{c}/{n}" for c, names in chosen.items() for n in names)
    assert len((tmp_path / "b" / "val.txt").read_text().split()) == 9
    imagenet_subset(src, tmp_path / "c", 0.1, seed=2, mode="list")
    assert (tmp_path / "c" / "train.txt").read_text() != (tmp_path / "b" / "train.txt").read_text()
    with pytest.raises(FileExistsError):
        imagenet_subset(src, tmp_path / "a", 0.1, seed=1)


def _ade(root, n_train, n_val):
    for split, n in (("training", n_train), ("validation", n_val)):
        for i in range(n):
            write_image(root / "images" / split / f"ADE_{split}_{i:04d}.jpg", np.zeros((3, 4, 4), np.uint8))
            write_mask(root / "annotations" / split / f"ADE_{split}_{i:04d}.png", np.full((4, 4), i % 150))
    return root


def test_ade20k_subset_keeps_pairs(tmp_path):
    src = _ade(tmp_path / "ade", 30, 6)
    assert ade20k_subset(src, tmp_path / "a", 0.2, seed=0) == {"training": 6, "validation": 6}
    images = sorted(p.stem for p in (tmp_path / "a" / "images" / "training").iterdir())
    assert images == sorted(p.stem for p in (tmp_path / "a" / "annotations" / "training").iterdir())
    for stem in images:
        np.testing.assert_array_equal(read_mask(tmp_path / "a" / "annotations" / "training" / f"{stem}.png"),
                                      read_mask(src / "annotations" / "training" / f"{stem}.png"))
    assert ade20k_subset(src, tmp_path / "b", 0.5, subset_val=True, mode="list") == {"training": 15, "validation": 3}
    assert (tmp_path / "b" / "train.txt").read_text().startswith("images/training/ADE_training_")
    (src / "annotations" / "training" / "ADE_training_0003.png").unlink()
    with pytest.raises(UserInputError, match=r"ADE_training_0003\.jpg: no annotation"):
        ade20k_subset(src, tmp_path / "c", 0.2)


def test_subset_rejects_bad_fraction(tmp_path):
    src = _imagenet(tmp_path / "in", {"n01": 2})
    with pytest.raises(UserInputError, match="fraction must be in"):
        imagenet_subset(src, tmp_path / "o", 0.0)


# ---------------------------------------------------------------- CLI


def test_cli_end_to_end(tmp_path, capsys):
    data, tiles = tmp_path / "syn", tmp_path / "tiles"
    assert main(["data", "synthetic", "--out", str(data), "--num", "3", "--size", "64", "--seed", "1", "--no-progress"]) == 0
    assert main(["data", "validate", str(data), "--channels", "2", "--bit-depth", "16", "--size", "64", "--no-progress"]) == 0
    assert main(["data", "validate", str(data), "--channels", "3", "--no-progress"]) == 1
    assert "synth_00000.tif: expected 3 channels, found 2" in capsys.readouterr().err
    assert main(["data", "tile", str(data), "--out", str(tiles), "--tile", "32", "--overlap", "8",
                 "--val-fraction", "0.34", "--no-progress"]) == 0
    assert len(list((tiles / "val" / "images").iterdir())) == 9
    assert main(["data", "stats", str(tiles / "train"), "--out", str(tiles / "train" / "stats.json"), "--no-progress"]) == 0
    assert json.loads((tiles / "train" / "stats.json").read_text())["num_images"] == 18
    assert main(["data", "synthetic", "--out", str(data), "--num", "1", "--size", "64", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "validate", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert f"mae-dbp: error: data folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    src = _imagenet(tmp_path / "in", {"a": 10, "b": 10})
    assert main(["data", "subset", "imagenet", str(src), "--out", str(tmp_path / "sub"), "--fraction", "0.3",
                 "--mode", "list", "--no-progress"]) == 0
    assert len((tmp_path / "sub" / "train.txt").read_text().split()) == 6


def test_tile_warns_when_a_split_is_empty(tmp_path, capsys):
    data = _industrial(tmp_path / "one", [(32, 32)])
    assert main(["data", "tile", str(data), "--out", str(tmp_path / "t"), "--tile", "16", "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mae-dbp: warning: 0 val tiles (4 train) with --val-fraction 0.1: validation needs at least "
                   "2 source images and a fraction > 0"]
    data = _industrial(tmp_path / "two", [(32, 32)] * 2)
    assert main(["data", "tile", str(data), "--out", str(tmp_path / "t2"), "--tile", "16", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err
