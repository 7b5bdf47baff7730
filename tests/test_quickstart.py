"""The README's main job, end to end at a reduced size: data, BP + DBP pretraining, export, UperNet."""

from __future__ import annotations

import json

import pytest

from mae_dbp.cli import main
from mae_dbp.quickstart import run_quickstart
from tests.sizes import TEST_SIZE


def test_quickstart_reduced_size(tmp_path, capsys):
    out = tmp_path / "qs"
    results = run_quickstart(out, TEST_SIZE)
    assert set(results["comparisons"]) == {"photos", "synthetic"}
    for name, comparison in results["comparisons"].items():
        assert [r["seed"] for r in comparison["runs"]] == list(TEST_SIZE.seeds)
        assert set(comparison["verdict"]) == {"time", "loss"} and "no claim" in comparison["verdict"]["loss"]
        assert (out / f"loss_vs_time_{name}.png").is_file()
    assert set(results["methods"]) == {"bp", "dbp"}
    for method, numbers in results["methods"].items():
        assert numbers["best_val_loss"] > 0 and numbers["train_seconds_to_best"] > 0
        assert numbers["mIoU"] is not None and 0 <= numbers["mIoU"] <= 100
        assert (out / "export" / method / "model.safetensors").is_file()
    assert set(results["dbp_time_to_bp_best"]) == {"target", "baseline_seconds", "candidate_seconds", "fraction"}
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    report = (out / "report.md").read_text()
    assert report.index("BP's best validation loss sooner") < report.index("| BP |")  # the comparison leads
    assert "| photos |" in report and "| synthetic |" in report and "| DBP |" in report
    for image in [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line]:
        assert (out / image).is_file(), image
    # a rerun into the same folder refuses without --force, and leaves it alone
    capsys.readouterr()
    assert main(["quickstart", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "report.md").read_text() == report
