"""Pretraining data: image-folder dataset (8/16-bit, any channels), transforms, bad files, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mae_dbp.config import DataConfig
from mae_dbp.data.checks import header_warnings
from mae_dbp.data.dataset import ImageFolderDataset, split_train_val, train_val_datasets
from mae_dbp.data.io import write_image
from mae_dbp.data.split import pick, pick_count
from mae_dbp.data.transforms import Normalize, build_transform
from mae_dbp.errors import UserInputError


def rng_image(seed: int, channels: int, h: int, w: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    return rng.integers(0, high, size=(channels, h, w), endpoint=True).astype(dtype)


@pytest.fixture
def two_channel_dir(tmp_path: Path) -> Path:
    root = tmp_path / "two"
    for i in range(5):
        write_image(root / f"img{i}.tif", rng_image(i, 2, 40, 48, np.uint16))
    return root


def test_png_8bit_and_tif_16bit_raw_values(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    rgb = rng_image(0, 3, 20, 24, np.uint8)
    Image.fromarray(np.moveaxis(rgb, 0, -1)).save(root / "a.png")
    gray16 = rng_image(1, 3, 20, 24, np.uint16)
    write_image(root / "b.tif", gray16)
    ds = ImageFolderDataset(root, channels=3)
    assert len(ds) == 2 and ds.classes == [] and ds.targets == [0, 0]
    (a, la), (b, lb) = ds[0], ds[1]
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (3, 20, 24)
    assert torch.equal(a, torch.from_numpy(rgb.astype(np.float32)))
    assert torch.equal(b, torch.from_numpy(gray16.astype(np.float32)))
    assert b.max() > 255  # 16-bit range preserved
    assert la == lb == 0


def test_16bit_png_and_jpg_single_channel(tmp_path):
    gray16 = rng_image(2, 1, 12, 12, np.uint16)
    write_image(tmp_path / "g" / "a.png", gray16)
    Image.fromarray(rng_image(3, 1, 12, 12, np.uint8)[0]).save(tmp_path / "g" / "b.jpg")
    ds = ImageFolderDataset(tmp_path / "g", channels=1)
    assert torch.equal(ds[0][0], torch.from_numpy(gray16.astype(np.float32)))
    assert ds[1][0].shape == (1, 12, 12)


def test_class_subfolders_give_labels(tmp_path):
    for cls, n in (("wire", 2), ("ball", 3)):
        for i in range(n):
            write_image(tmp_path / "c" / cls / f"{i}.png", rng_image(i, 1, 8, 8, np.uint8))
    ds = ImageFolderDataset(tmp_path / "c", channels=1)
    assert ds.classes == ["ball", "wire"]
    assert ds.targets == [0, 0, 0, 1, 1]
    assert ds[4][1] == 1 and ds[4][0].shape == (1, 8, 8)


def test_industrial_layout_uses_images_folder(tmp_path):
    write_image(tmp_path / "ind" / "images" / "x.tif", rng_image(0, 2, 8, 8, np.uint16))
    write_image(tmp_path / "ind" / "masks" / "x.png", np.zeros((1, 8, 8), np.uint8))
    ds = ImageFolderDataset(tmp_path / "ind", channels=2)
    assert len(ds) == 1 and ds[0][0].shape == (2, 8, 8)


def test_two_channel_train_transform(two_channel_dir):
    tf = build_transform(True, 16, mean=[32768, 30000], std=[10000, 20000], channels=2)
    ds = ImageFolderDataset(two_channel_dir, channels=2, transform=tf)
    torch.manual_seed(0)
    image, _ = ds[0]
    assert image.shape == (2, 16, 16) and image.dtype == torch.float32
    assert image.abs().max() < 10  # normalised
    val = build_transform(False, 16, mean=32768, std=10000)
    a, b = val(ds.load(0)), val(ds.load(0))
    assert a.shape == (2, 16, 16) and torch.equal(a, b)


def test_train_crop_is_seeded_and_keeps_constants_on_any_channel_count():
    tf = build_transform(True, 12, mean=[0.0], std=[1.0], scale=(0.2, 1.0))
    image = torch.rand(5, 40, 60)
    torch.manual_seed(5)
    a = tf(image)
    torch.manual_seed(5)
    assert torch.equal(a, tf(image)) and a.shape == (5, 12, 12)
    assert torch.allclose(tf(torch.full((5, 20, 30), 7.0)), torch.full((5, 12, 12), 7.0))  # bicubic keeps constants


def test_flip_on_two_channels():
    """A full-area crop of a square image at its own size is the image itself, so only the flip shows."""
    tf = build_transform(True, 4, mean=[0.0], std=[1.0], scale=(1.0, 1.0))
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    torch.manual_seed(0)
    outs = [tf(image) for _ in range(200)]
    assert all(torch.equal(o, image) or torch.equal(o, image.flip(-1)) for o in outs)
    assert 60 < sum(torch.equal(o, image.flip(-1)) for o in outs) < 140


def test_val_transform_is_bicubic_antialiased_resize_centre_crop_and_n_channel_normalisation():
    """Against an independent reference: torch's own antialiased bicubic interpolate, a hand crop and
    per-channel (x - mean) / std over 4 channels."""
    image = torch.rand(4, 48, 36) * 65535
    mean, std = [100.0, 2000.0, 30000.0, 5.0], [50.0, 500.0, 10000.0, 2.0]
    out = build_transform(False, 16, mean, std, channels=4)(image)
    resized = torch.nn.functional.interpolate(image[None], size=(21, 16), mode="bicubic", antialias=True,
                                              align_corners=False)[0]  # shorter side 36 -> 16, 48 -> 21
    expected = (resized[:, 2:18] - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert out.shape == (4, 16, 16) and torch.allclose(out, expected, atol=1e-3)


def test_normalize_matches_hand_computation():
    image = torch.tensor([[[100.0, 200.0]], [[1000.0, 3000.0]]])  # (2, 1, 2)
    out = Normalize([100.0, 2000.0], [50.0, 500.0])(image)
    expected = torch.tensor([[[0.0, 2.0]], [[-2.0, 2.0]]])
    assert torch.allclose(out, expected)
    single = Normalize(32768, 1000)(torch.full((2, 1, 1), 33768.0))
    assert torch.allclose(single, torch.ones(2, 1, 1))
    with pytest.raises(UserInputError, match="data.mean has 3 values for 2-channel"):
        Normalize([1, 2, 3], 1.0)(torch.zeros(2, 1, 1))
    with pytest.raises(UserInputError, match="data.std"):
        build_transform(True, 8, mean=0, std=[1, 2, 3], channels=2)
    with pytest.raises(UserInputError, match="data.std: expected positive"):
        Normalize(0, [1, 0])


def test_wrong_channel_count_names_file(two_channel_dir):
    bad = two_channel_dir / "img9_rgb.png"
    write_image(bad, rng_image(0, 3, 8, 8, np.uint8))
    ds = ImageFolderDataset(two_channel_dir, channels=2)
    index = ds.paths.index(bad)
    with pytest.raises(UserInputError, match=r"img9_rgb\.png: expected 2 channels, found 3") as info:
        ds[index]
    assert "\n" not in str(info.value)


def test_corrupt_file_names_file_and_skip_bad_lists_it(two_channel_dir):
    bad = two_channel_dir / "img2.tif"
    bad.write_bytes(b"not really a tiff")
    wrong = two_channel_dir / "zz_gray.png"
    write_image(wrong, rng_image(0, 1, 8, 8, np.uint8))
    ds = ImageFolderDataset(two_channel_dir, channels=2)
    with pytest.raises(UserInputError, match=r"img2\.tif: cannot read image") as info:
        ds[ds.paths.index(bad)]
    assert "\n" not in str(info.value)

    skipping = ImageFolderDataset(two_channel_dir, channels=2, skip_bad=True)
    assert skipping.bad_files == [str(bad), str(wrong)]
    assert "img2.tif" in skipping.bad_reasons[str(bad)]
    assert len(skipping) == 4 and bad not in skipping.paths
    assert all(skipping[i][0].shape == (2, 40, 48) for i in range(len(skipping)))


def test_skip_bad_replaces_a_file_broken_after_scan(two_channel_dir):
    ds = ImageFolderDataset(two_channel_dir, channels=2, skip_bad=True)
    assert ds.bad_files == []
    broken = ds.paths[1]
    broken.write_bytes(b"garbage")
    image, _ = ds[1]
    assert torch.equal(image, ds.load(2))  # deterministically the next index
    assert ds.bad_files == [str(broken)]


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", channels=1)
    with pytest.raises(UserInputError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", channels=1)
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.png").write_bytes(b"nope")
    with pytest.raises(UserInputError, match="no readable"):
        ImageFolderDataset(tmp_path / "allbad", channels=1, skip_bad=True)


def test_split_is_seeded_deterministic_and_disjoint():
    paths = [Path(f"/d/{i:03d}.png") for i in range(50)]
    train, val = split_train_val(paths, 0.2, seed=7)
    assert len(val) == 10 and len(train) == 40
    assert not set(train) & set(val) and set(train) | set(val) == set(paths)
    assert (train, val) == split_train_val(list(reversed(paths)), 0.2, seed=7)
    assert val != split_train_val(paths, 0.2, seed=8)[1]
    assert len(split_train_val(paths[:3], 0.01, seed=0)[1]) == 1
    with pytest.raises(UserInputError, match="val_fraction"):
        split_train_val(paths, 0.0, seed=0)


def test_dataset_from_path_list_with_dataloader_workers(two_channel_dir):
    train, val = split_train_val(sorted(two_channel_dir.glob("*.tif")), 0.4, seed=0)
    tf = build_transform(True, 16, mean=32768, std=16384)
    ds = ImageFolderDataset(train, channels=2, transform=tf, root=two_channel_dir)
    assert len(ds) == 3 and ds.targets == [0, 0, 0]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    torch.manual_seed(0)
    images, labels = next(iter(loader))
    assert images.shape == (3, 2, 16, 16) and labels.tolist() == [0, 0, 0]


# ---------------------------------------------------------------- non-finite data, warnings, one split rule


def _nan_image(h: int = 40, w: int = 48) -> np.ndarray:
    image = np.ones((2, h, w), np.float32)
    image[0, 3, 4] = np.nan
    return image


def test_nan_pixel_file_is_named_or_skipped_and_listed(two_channel_dir):
    nan_file = two_channel_dir / "img_nan.tif"
    write_image(nan_file, _nan_image())
    ds = ImageFolderDataset(two_channel_dir, channels=2)
    with pytest.raises(UserInputError, match=r"img_nan\.tif: 1 NaN/Inf pixel"):
        ds[ds.paths.index(nan_file)]
    skipping = ImageFolderDataset(two_channel_dir, channels=2, skip_bad=True)
    assert skipping.bad_files == [str(nan_file)] and nan_file not in skipping.paths


def test_batch_inputs_map_back_to_their_files(two_channel_dir):
    """The loop's index wrapper names the files of a batch's rows (guard.non_finite_rows picks the rows)."""
    from mae_dbp.train.guard import non_finite_rows
    from mae_dbp.train.loop import WithIndex

    ds = WithIndex(ImageFolderDataset(two_channel_dir, channels=2))
    assert ds.names([4, 0]) == [str(ds.dataset.paths[4]), str(ds.dataset.paths[0])]
    images = torch.zeros(3, 2, 4, 4)
    images[1, 0, 2, 2] = float("inf")
    indices = torch.tensor([3, 1, 2])
    assert ds.names([int(indices[r]) for r in non_finite_rows(images)]) == [str(ds.dataset.paths[1])]
    assert non_finite_rows(torch.zeros(3, 2, 4, 4)) == []


def test_mixed_bit_depth_and_small_images_warn_once_with_count_and_example(tmp_path, capsys):
    root = tmp_path / "mixed"
    for i in range(6):
        write_image(root / f"a{i}.png", rng_image(i, 1, 40, 40, np.uint16))
    write_image(root / "b8.png", rng_image(9, 1, 40, 40, np.uint8))
    write_image(root / "small.png", rng_image(7, 1, 20, 40, np.uint16))
    lines = header_warnings(sorted(root.iterdir()), 32)
    assert len(lines) == 2
    assert lines[0].startswith("1 of 8 images are 8-bit among 16-bit ones (e.g. ") and "b8.png" in lines[0]
    assert lines[1].startswith("1 of 8 images are smaller than model.img_size=32 px (e.g. ") and "small.png, 20x40" in lines[1]
    assert header_warnings(sorted(root.glob("a*.png")), 40) == []

    cfg = DataConfig(root=str(root), val_fraction=0.25, mean=[0.0], std=[1.0])
    train, _ = train_val_datasets(cfg, 1, 32, augment=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mae-dbp: warning: {line}" for line in lines] and train.warnings == lines


def test_one_pick_rule_bounds_and_seeds():
    assert [pick_count(10, f, True) for f in (0.0, 0.01, 0.3, 0.99, 1.0)] == [0, 1, 3, 9, 9]
    assert [pick_count(10, f, False) for f in (0.0, 0.01, 1.0)] == [0, 1, 10]
    assert pick_count(1, 0.5, True) == 0 and pick_count(0, 0.5, False) == 0
    chosen = pick(50, 0.2, "0/train/cat")
    assert chosen == sorted(set(chosen)) and len(chosen) == 10 and chosen == pick(50, 0.2, "0/train/cat")
    assert chosen != pick(50, 0.2, "0/train/dog")
    import random  # the pretraining split is exactly random.Random(seed).sample over the sorted files
    assert pick(50, 0.2, 7) == sorted(random.Random(7).sample(range(50), 10))
