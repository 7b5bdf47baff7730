"""The bundled-photograph crop set: disjoint train/val regions, determinism, no network, CLI."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from data_tools.photos import load_photo, photo_paths, write_photos
from mae_dbp.cli import main
from mae_dbp.data.io import list_images, read_image
from mae_dbp.errors import UserInputError
from tests.conftest import needs

pytestmark = needs("sklearn")


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos") / "set"
    write_photos(out, size=16, train_crops=40, val_crops=12, seed=5)
    return out


def test_crops_come_from_disjoint_column_ranges_of_the_real_photos(photo_set):
    manifest = json.loads((photo_set / "crops.json").read_text())
    size = manifest["size"]
    photos = {name: load_photo(path) for name, path in photo_paths().items()}
    assert set(photos) >= {"china", "flower", "grace_hopper", "Minduka_Present_Blue_Pack"}
    for name, image in photos.items():
        train = [c for c in manifest["crops"] if c["photo"] == name and c["split"] == "train"]
        val = [c for c in manifest["crops"] if c["photo"] == name and c["split"] == "val"]
        assert val, name
        # every training crop ends left of where every validation crop starts: no shared pixel
        assert max(c["x"] + size for c in train) <= min(c["x"] for c in val)
        for crop in train[:3] + val[:3]:
            pixels = read_image(photo_set / crop["file"])
            assert pixels.shape == (3, size, size) and pixels.dtype == np.uint8
            y, x = crop["y"], crop["x"]
            np.testing.assert_array_equal(pixels, image[:, y:y + size, x:x + size])
    assert len(list_images(photo_set / "train")) == 40 and len(list_images(photo_set / "val")) == 12
    stats = json.loads((photo_set / "stats.json").read_text())
    assert stats["channels"] == 3 and 0 < min(stats["std"])


def test_same_seed_same_crops_other_seed_other_crops_and_no_network(photo_set, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the photo set must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    write_photos(tmp_path / "again", size=16, train_crops=40, val_crops=12, seed=5)
    write_photos(tmp_path / "other", size=16, train_crops=40, val_crops=12, seed=6)
    first = json.loads((photo_set / "crops.json").read_text())["crops"]
    assert json.loads((tmp_path / "again" / "crops.json").read_text())["crops"] == first
    assert json.loads((tmp_path / "other" / "crops.json").read_text())["crops"] != first
    for a, b in zip(list_images(photo_set / "val"), list_images(tmp_path / "again" / "val")):
        assert a.read_bytes() == b.read_bytes()


def test_existing_output_kept_and_bad_sizes_are_one_line_errors(photo_set, tmp_path, capsys):
    with pytest.raises(FileExistsError):
        write_photos(photo_set, size=16, train_crops=4, val_crops=2)
    assert len(list_images(photo_set / "train")) == 40
    with pytest.raises(UserInputError, match="too narrow|too small"):
        write_photos(tmp_path / "big", size=120)
    code = main(["data", "photos", "--out", str(tmp_path / "cli"), "--size", "8", "--train-crops", "6",
                 "--val-crops", "4", "--no-progress"])
    assert code == 0 and len(list_images(tmp_path / "cli" / "val")) == 4
