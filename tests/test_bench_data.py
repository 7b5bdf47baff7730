"""``mae-dbp bench data`` reports what it promises (no timing assertions: docs/benchmarks.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mae_dbp.cli import main
from mae_dbp.data.io import write_image

TINY = "configs/pretrain/tiny_cpu_dbp.yaml"


@pytest.mark.slow
def test_bench_data_counts_window_bytes_and_names_the_bound(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(8):
        write_image(tmp_path / "images" / f"im{i}.tif", rng.integers(0, 65535, (2, 128, 128), dtype=np.uint16))
    common = ["bench", "data", "--config", TINY, "--workers", "0", "1", "--images", "8", "--repeats", "1",
              f"data.root={tmp_path / 'images'}", "model.in_chans=2", "data.mean=[30000]", "data.std=[10000]",
              "data.crop_scale=[0.05,0.2]", "train.batch_size=4", "train.effective_batch=4"]
    results = {}
    for name, extra in (("whole", ["data.crop_first=false", "--steps", "0"]), ("window", ["--steps", "1"]),
                        ("k2", ["data.crops_per_image=2", "--steps", "0"])):
        out = tmp_path / f"{name}.json"
        assert main([*common, *extra, "--json", str(out), "--markdown", str(tmp_path / f"{name}.md")]) == 0
        results[name] = json.loads(out.read_text())
    file_mb = (tmp_path / "images" / "im0.tif").stat().st_size / 1e6
    assert results["whole"]["mb_per_sample"] == pytest.approx(file_mb)
    assert results["window"]["mb_per_sample"] <= 0.2 * 128 * 128 * 4 / 1e6 * 1.1  # the crop's window at most
    assert results["window"]["mb_per_sample"] <= results["window"]["page_mb_per_sample"] <= file_mb  # whole pages
    assert results["k2"]["path"].endswith("crops_per_image 2, level_gap 1.0")
    assert set(results["window"]["workers"]) == {"0", "1"} and results["window"]["workers"]["1"]["median"] > 0
    verdict = results["window"]["verdict"]
    assert verdict.split(":")[0] in ("loader-bound", "step-bound") and "img/s, the step takes" in verdict
    assert verdict in capsys.readouterr().out and verdict in (tmp_path / "window.md").read_text()
    assert results["window"]["levels"] == {"samples": 8, "share_from_levels": 0.0}  # plain TIFFs: no levels

    from data_tools.pyramid import write_pyramids

    y, x = np.mgrid[0:512, 0:512]
    for i in range(4):  # crops of 240-400 px of 512 px images: the 256 px level spans >= 64 px of each
        smooth = 30000 + 15000 * np.sin(y / (7.0 + i)) * np.cos(x / 11.0) + rng.normal(0, 1000, (2, 512, 512))
        write_image(tmp_path / "big" / f"im{i}.tif", smooth.clip(0, 65535).astype(np.uint16))
    write_pyramids(tmp_path / "big", tmp_path / "pyr", min_side=64, progress=False)  # 256, 128, 64 px levels
    for name, extra in (("pyr", []), ("full", ["data.level_gap=null"])):
        out = tmp_path / f"{name}.json"
        assert main([*common, f"data.root={tmp_path / 'pyr' / 'images'}", "data.crop_scale=[0.3,0.6]", "--steps", "0",
                     *extra, "--json", str(out)]) == 0
        results[name] = json.loads(out.read_text())
    assert results["pyr"]["levels"]["share_from_levels"] == 1.0 and "levels" not in results["full"]
    assert results["pyr"]["levels"]["rms_over_std_max"] < 0.05
    assert results["pyr"]["mb_per_sample"] < 0.3 * results["full"]["mb_per_sample"]
