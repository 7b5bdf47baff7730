"""The README's main job, end to end at a reduced size: data, BP + DBP pretraining, export, UperNet."""

from __future__ import annotations

import json

import pytest

from mae_dbp.cli import main
from mae_dbp.quickstart import QuickstartSize, run_quickstart

# the quickstart end to end in about a minute
TEST_SIZE = QuickstartSize(pretrain_images=48, photo_train_crops=64, photo_val_crops=16, seeds=(0, 1),
                           seg_train_images=12, seg_val_images=6, image_size=32, pretrain_seconds=4.0,
                           pretrain_epochs=2, seg_iters=4)


@pytest.mark.slow
@pytest.mark.e2e
def test_quickstart_reduced_size(tmp_path, capsys):
    out = tmp_path / "qs"
    results = run_quickstart(out, TEST_SIZE)
    assert set(results["comparisons"]) == {"photos", "synthetic"}
    for name, comparison in results["comparisons"].items():
        assert [r["seed"] for r in comparison["runs"]] == list(TEST_SIZE.seeds)
        assert set(comparison["verdict"]) == {"time", "loss"} and "no claim" in comparison["verdict"]["loss"]
        assert (out / f"loss_vs_time_{name}.png").is_file()
    finetune = results["finetune"]  # every seed's wire-bond encoders, exported and fine-tuned
    assert [r["seed"] for r in finetune["runs"]] == list(TEST_SIZE.seeds)
    for r in finetune["runs"]:
        assert 0 <= r["bp_mIoU"] <= 100 and 0 <= r["dbp_mIoU"] <= 100
        assert r["difference"] == pytest.approx(r["dbp_mIoU"] - r["bp_mIoU"])
        for method in ("bp", "dbp"):
            assert (out / "finetune" / f"{method}-seed{r['seed']}" / "export" / "model.safetensors").is_file()
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    report = (out / "report.md").read_text()
    # the answer first, the regime in one sentence under it, details after
    assert report.index("BP's best validation loss sooner") < report.index("| photos |") < report.index("short horizon") \
        < report.index("How these runs were made") < report.index("BP mIoU")
    assert "docs/results.md" in report and finetune["verdict"] in report
    # the wire-bond runs carry the labelled set as their linear probe: features judged too, photos have no labels
    assert "features sooner? (synthetic)" in report and "features sooner? (photos)" not in report
    assert (out / "probe_vs_time_synthetic.png").read_bytes()[:4] == b"\x89PNG"
    assert "| photos |" in report and "| synthetic |" in report and "| median (range) |" in report
    for name in ("photos", "synthetic"):  # both data sets' BP and DBP reconstructions, side by side
        seed0 = results["comparisons"][name]["runs"][0]
        assert f"| ![BP](pretrain/{name}/{seed0['bp_run']}/reconstructions.png) | ![DBP](pretrain/{name}/{seed0['dbp_run']}" in report
    for image in [line.split("](")[1].split(")")[0] for line in report.splitlines() if "](" in line]:
        assert (out / image).is_file(), image
    # a rerun into the same folder refuses without --force, and leaves it alone
    capsys.readouterr()
    assert main(["quickstart", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "report.md").read_text() == report
