"""``mae-dbp bench speedup`` on a seconds-long budget: real pretraining runs, JSON / markdown / PNG out."""

from __future__ import annotations

import json

import pytest

from data_tools.photos import write_photos
from mae_dbp.bench.speedup import compare_pair, median_range
from mae_dbp.cli import main

pytest.importorskip("sklearn")


def _run(losses, seconds, co2=None):
    rows = [{"epoch": i + 1, "step": 10 * (i + 1), "train_seconds": t, "val_loss": v, "kg_co2": (co2 or seconds)[i]}
            for i, (v, t) in enumerate(zip(losses, seconds))]
    return {"rows": rows, "cpu_per_wall": 1.0}


def test_compare_pair_reads_time_to_bp_best_from_the_curves():
    bp = _run([0.5, 0.4, 0.3, 0.31], [10, 20, 30, 40])
    dbp = _run([0.45, 0.29, 0.25], [12, 24, 36])
    pair = compare_pair(bp, dbp, thresholds=[0.42, 0.26])
    assert pair["bp_best_val_loss"] == 0.3 and pair["bp_seconds_to_best"] == 30
    assert pair["dbp_seconds_to_bp_best"] == 24 and pair["time_fraction"] == pytest.approx(0.8)
    assert pair["epoch_fraction"] == pytest.approx(2 / 3) and pair["dbp_best_val_loss"] == 0.25
    assert pair["step_time_ratio"] == pytest.approx((36 / 30) / (40 / 40))
    assert pair["to_threshold"]["0.42"] == {"bp_seconds": 20, "dbp_seconds": 24}
    assert pair["to_threshold"]["0.26"] == {"bp_seconds": None, "dbp_seconds": 36}
    never = compare_pair(bp, _run([0.5, 0.35], [10, 20]))
    assert never["time_fraction"] is None and never["dbp_seconds_to_bp_best"] is None
    assert median_range([0.5, None, 0.7]) == {"median": 0.7, "min": 0.5, "max": None, "never": 1}


def test_bench_speedup_cli_writes_json_markdown_and_plot(tmp_path):
    data = tmp_path / "photos"
    write_photos(data, size=32, train_crops=64, val_crops=16, seed=0)
    out = tmp_path / "bench"
    argv = ["bench", "speedup", "--data", str(data), "--budget", "2", "--epochs", "2", "--seeds", "0", "1",
            "--lr-multipliers", "1", "2", "--no-emissions", "--out", str(out / "runs"), "--config", "tiny_photos_dbp.yaml",
            "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out / "r.png"),
            "--dbp", "decor.lr_schedule=constant"]
    assert main(argv) == 0
    result = json.loads((out / "r.json").read_text())
    assert set(result["sweep"]) == {"bp", "dbp"} and len(result["sweep"]["bp"]["best_val_loss"]) == 2
    assert [r["seed"] for r in result["runs"]] == [0, 1] and len(result["settings"]["thresholds"]) == 3
    assert result["summary"]["time_fraction"]["never"] + sum(
        r["time_fraction"] is not None for r in result["runs"]) == 2
    # the sweep's seed-0 run at the chosen lr is reused, not trained again: 2 x 2 sweep + 2 for seed 1
    assert len(list((out / "runs").glob("*/bench_run.json"))) == 6
    assert "DBP seconds to BP's best" in (out / "r.md").read_text()
    assert (out / "r.png").read_bytes()[:4] == b"\x89PNG"
