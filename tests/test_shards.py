"""WebDataset shards: ``mae-dbp data shard`` keeps the raw pixels, the manifest describes the shards,
the training stream reads them like the folder and two real CPU ranks see disjoint samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.shard import write_shards
from data_tools.synthetic import write_synthetic
from mae_dbp.cli import main
from mae_dbp.data.crops import CropFirst
from mae_dbp.data.io import read_image
from mae_dbp.data.shards import open_shards, shard_samples
from mae_dbp.data.window import open_window
from mae_dbp.errors import UserInputError
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("shards") / "wb", num=6, size=48, seed=3, progress=False)


def _pixels_by_key(shards) -> dict[str, np.ndarray]:
    found = {}
    for shard in shards.shards:
        for key, data in shard_samples(shard):
            with open_window(data, name=key + ".tiff") as reader:
                assert reader.kind == "memmap"  # raw contiguous TIFF bytes: windows cut without decoding
                found[key] = np.array(reader.read(0, 0, reader.shape[1], reader.shape[2]))
    return found


def test_whole_images_and_tiles_keep_the_folder_pixels(source, tmp_path):
    assert main(["data", "shard", str(source), "--out", str(tmp_path / "whole"), "--shard-size", "0.01",
                 "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert manifest["samples"] == 6 and manifest["channels"] == 2 and manifest["dtype"] == "uint16"
    assert [s["count"] for s in manifest["shards"]] == [1] * 6  # 48 x 48 x 2 x 2 bytes > 0.01 MB
    images = {p.stem: read_image(p) for p in sorted((source / "images").glob("*.tif"))}
    whole = _pixels_by_key(open_shards(str(tmp_path / "whole")))
    assert whole.keys() == images.keys() and all(np.array_equal(whole[k], images[k]) for k in images)
    manifest = write_shards(source, tmp_path / "tiles", tile=32, overlap=8, shard_mb=0.02, progress=False)
    tiles = _pixels_by_key(open_shards(str(tmp_path / "tiles")))
    assert len(tiles) == manifest["samples"] == 6 * 4  # starts 0 and 16 on both axes
    for key, pixels in tiles.items():
        stem, y, x = key.rsplit("_y", 1)[0], int(key.split("_y")[1][:5]), int(key.split("_x")[1][:5])
        assert np.array_equal(pixels, images[stem][:, y:y + 32, x:x + 32]), key
    first = manifest["shards"][0]["keys"]
    assert len({k.rsplit("_y", 1)[0] for k in first}) > 1  # a shard mixes source images
    pattern = open_shards(str(tmp_path / "tiles" / "shard-{00000..00001}.tar"))
    assert [Path(s.url).name for s in pattern.shards] == ["shard-00000.tar", "shard-00001.tar"]


def test_training_crops_from_a_shard_equal_those_from_the_file(source, tmp_path):
    write_shards(source, tmp_path / "s", progress=False)
    crop = CropFirst(16, [32768.0] * 2, [16384.0] * 2, channels=2, scale=(0.1, 0.5))
    shards = open_shards(str(tmp_path / "s"))
    key, data = next(shard_samples(shards.shards[0]))
    with open_window(data, 2, name="x.tiff") as reader:
        from_shard = crop.crops(reader, 3, torch.Generator().manual_seed(7))
    with open_window(source / "images" / f"{key}.tif", 2) as reader:
        from_file = crop.crops(reader, 3, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(from_shard, from_file))


def test_a_truncated_shard_is_an_error_naming_it(source, tmp_path):
    write_shards(source, tmp_path / "s", shard_mb=0.03, progress=False)  # 3 samples per shard
    shard = tmp_path / "s" / "shard-00000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UserInputError, match="shard-00000.tar: "):
        list(shard_samples(open_shards(str(tmp_path / "s")).shards[0]))
    with pytest.raises(UserInputError, match="manifest.json"):
        open_shards(str(tmp_path))


@pytest.mark.slow
@pytest.mark.dist
def test_two_cpu_ranks_read_disjoint_samples(source, tmp_path):
    """torchrun starts two gloo ranks; each builds the loader as the training loop does."""
    write_shards(source, tmp_path / "s", tile=24, shard_mb=0.01, progress=False)  # 24 tiles, 4 per shard
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO / "tests" / "shard_ranks.py"), str(tmp_path / "s"), str(source / "images"),
               str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["images"] == 24 for r in ranks)
    assert ranks[0]["batches"] == ranks[1]["batches"] == 12 * 2 // 4  # half the tiles each, 2 crops, batch 4
    for epoch in ("1", "2"):
        seen = [set(r["seen"][epoch]) for r in ranks]
        assert len(ranks[0]["seen"][epoch]) == len(ranks[1]["seen"][epoch]) == 24
        assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 24
    assert ranks[0]["seen"]["1"] != ranks[0]["seen"]["2"]  # reshuffled per epoch


@pytest.mark.parametrize("format_", ["ustar", "gnu", "pax"])
def test_tar_members_read_what_tarfile_wrote(tmp_path, format_):
    """Against the standard library's own reader: long names (ustar prefix, GNU 'L', pax 'path'),
    a directory and a symlink skipped, an empty member, a member of an exact block multiple."""
    import io
    import tarfile

    from mae_dbp.data.shards import tar_members

    rng = np.random.default_rng(0)
    files = {"a.tiff": rng.bytes(1000), "a.json": b"{}", "empty.txt": b"", "block.bin": rng.bytes(1024),
             "deep/" * 12 + "long_name_sample.tiff": rng.bytes(700)}
    if format_ != "ustar":  # a basename over 100 characters needs GNU or pax headers
        files["x" * 150 + ".tiff"] = rng.bytes(513)
    path = tmp_path / "t.tar"
    fmt = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[format_]
    with tarfile.open(path, "w", format=fmt) as tar:
        folder = tarfile.TarInfo("adir")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("alink")
        link.type, link.linkname = tarfile.SYMTYPE, "a.tiff"
        tar.addfile(link)
    with tarfile.open(path) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]
    with open(path, "rb") as stream:
        assert list(tar_members(stream)) == expected == list(files.items())
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[10] ^= 0xFF  # inside the first header's name: its checksum no longer matches
    with pytest.raises(ValueError, match="checksum"):
        list(tar_members(io.BytesIO(bytes(damaged))))
    with pytest.raises(ValueError, match="ends inside"):
        list(tar_members(io.BytesIO(data[:512 * 3 + 100])))

