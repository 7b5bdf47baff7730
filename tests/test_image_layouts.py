"""The image layouts docs/usage.md lists, written with the tifffile calls it gives, and the hint
``data validate`` gives for a channels-last TIFF read as pages."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from mae_dbp.cli import main
from mae_dbp.data.io import read_image
from mae_dbp.errors import UserInputError

HW2 = np.arange(40 * 24 * 2, dtype=np.uint16).reshape(40, 24, 2)
CHW = np.ascontiguousarray(HW2.transpose(2, 0, 1))


@pytest.mark.parametrize("write", [
    lambda path: tifffile.imwrite(path, CHW),
    lambda path: tifffile.imwrite(path, CHW, photometric="minisblack", planarconfig="separate"),
    lambda path: tifffile.imwrite(path, HW2, photometric="minisblack", planarconfig="contig"),
], ids=["pages", "planar", "contiguous"])
def test_documented_tiff_layouts_read_as_channels_first(tmp_path, write):
    write(tmp_path / "a.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif", channels=2), CHW)


def test_16_bit_png_reads_as_one_channel(tmp_path):
    Image.fromarray(CHW[0]).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png", channels=1)
    assert image.dtype == np.uint16 and image.shape == (1, 40, 24)


def test_channels_last_tiff_gets_a_fix_in_its_one_error_line(tmp_path, capsys):
    wide = np.zeros((40, 32, 2), np.uint16)  # H x W x 2 without photometric: 40 pages of 32 x 2 px
    tifffile.imwrite(tmp_path / "bad.tif", wide)
    with pytest.raises(UserInputError, match=r"expected 2 channels, found 40 \(a channels-last H x W x 2 array"):
        read_image(tmp_path / "bad.tif", channels=2)
    assert main(["data", "validate", str(tmp_path), "--channels", "2", "--no-progress"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "bad.tif" in line]
    assert len(lines) == 1 and "expected 2 channels, found 40" in lines[0]
    assert "tifffile.imwrite(path, array.transpose(2, 0, 1))" in lines[0]
    # without --channels the file is still a problem, with the same fix
    assert main(["data", "validate", str(tmp_path), "--no-progress"]) == 1
    assert "array.transpose(2, 0, 1)" in capsys.readouterr().err
    # the fix it names reads as 2 channels
    tifffile.imwrite(tmp_path / "bad.tif", wide.transpose(2, 0, 1))
    assert read_image(tmp_path / "bad.tif", channels=2).shape == (2, 40, 32)


def test_a_real_many_channel_image_gets_no_layout_hint(tmp_path):
    tifffile.imwrite(tmp_path / "cube.tif", np.zeros((20, 32, 32), np.uint16))
    with pytest.raises(UserInputError) as error:
        read_image(tmp_path / "cube.tif", channels=2)
    assert "channels-last" not in str(error.value)
