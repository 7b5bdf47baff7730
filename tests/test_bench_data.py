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
    assert results["k2"]["path"].endswith("crops_per_image 2, level_gap 1.5")
    assert set(results["window"]["workers"]) == {"0", "1"} and results["window"]["workers"]["1"]["median"] > 0
    verdict = results["window"]["verdict"]
    assert verdict.split(":")[0] in ("loader-bound", "step-bound") and "img/s, the step takes" in verdict
    assert verdict in capsys.readouterr().out and verdict in (tmp_path / "window.md").read_text()
