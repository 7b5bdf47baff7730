"""The online linear probe (``eval.probe``): ridge head, scores, reproducibility, and a run whose
losses do not change when it probes."""

from __future__ import annotations

import csv
import math
import json

import numpy as np
import pytest
import timm
import torch

from data_tools.synthetic import write_synthetic
from mae_dbp.config import load_config
from mae_dbp.data.io import write_image
from mae_dbp.errors import UserInputError
from mae_dbp.probe import LinearProbe, ProbeConfig, best_probe
from mae_dbp.probe.ridge import fit_ridge, predict
from mae_dbp.probe.score import accuracy, mean_iou
from mae_dbp.train.pretrain import PretrainConfig, pretrain
from tests.conftest import tiny_pretrain

MEAN, STD = [32768.0] * 2, [16384.0] * 2


def tiny_encoder(in_chans: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, in_chans=in_chans,
                             embed_dim=32, depth=2, num_heads=2, patch_size=8)


def test_ridge_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g)
    w, b = torch.randn(6, 3, generator=g), torch.tensor([1.0, -2.0, 0.5])
    weight, bias = fit_ridge(x, x @ w + b, ridge=1e-9)
    torch.testing.assert_close(weight.float(), w, atol=1e-4, rtol=0)
    torch.testing.assert_close(bias.float(), b, atol=1e-4, rtol=0)
    torch.testing.assert_close(predict(x[:2], weight, bias).float(), x[:2] @ w + b, atol=1e-4, rtol=0)
    shrunk, _ = fit_ridge(x, x @ w + b, ridge=10.0)  # a large penalty shrinks the weights
    assert shrunk.norm() < 0.5 * weight.norm()


def test_scores():
    target = torch.tensor([[0, 0, 1, 255]])
    assert mean_iou(torch.tensor([[0, 1, 1, 1]]), target, num_classes=2, ignore_index=255) == pytest.approx(
        (50 + 50) / 2)  # class 0: 1 of 2, class 1: 1 of 2; the ignored pixel does not count
    assert mean_iou(target.clamp_max(1), target.clamp_max(1), 2, 255) == 100.0
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0])) == 50.0


def test_best_probe_reads_the_rows():
    rows = [{"epoch": 1, "train_seconds": 3.0, "probe_score": 20.0, "probe_metric": "mIoU", "probe_seconds": 0.5},
            {"epoch": 2, "train_seconds": 6.0},
            {"epoch": 3, "train_seconds": 9.0, "probe_score": 25.0, "probe_metric": "mIoU", "probe_seconds": 0.5},
            {"epoch": 4, "train_seconds": 12.0, "probe_score": 25.0, "probe_metric": "mIoU", "probe_seconds": 0.5}]
    assert best_probe(rows) == {"best_probe_score": 25.0, "probe_metric": "mIoU", "best_probe_epoch": 3,
                                "train_seconds_to_best_probe": 9.0, "probe_seconds_total": 1.5}
    assert best_probe([{"epoch": 1, "train_seconds": 1.0}]) == {}


def test_segmentation_probe_is_reproducible_and_leaves_the_rng_and_mode_alone(tmp_path):
    write_synthetic(tmp_path / "seg", num=12, size=32, seed=3, progress=False)  # no train/val: a seeded split
    probe = LinearProbe(ProbeConfig(folder=str(tmp_path / "seg"), max_images=8), 2, 32, MEAN, STD)
    encoder = tiny_encoder()
    encoder.train()
    rng = torch.get_rng_state()
    first = probe.run(encoder, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng) and encoder.training
    assert first["probe_metric"] == "mIoU" and 0 < first["probe_score"] <= 100
    assert probe.data.train.images.shape == (8, 2, 32, 32) and probe.data.val.targets.shape == (3, 32, 32)
    again = LinearProbe(ProbeConfig(folder=str(tmp_path / "seg"), max_images=8), 2, 32, MEAN, STD)
    assert again.run(encoder, torch.device("cpu"))["probe_score"] == first["probe_score"]  # to the last digit
    assert probe.due(2, 10) is True and LinearProbe(ProbeConfig(every=3), 2, 32, MEAN, STD).due(2, 10) is False


def test_classification_probe_separates_classes_a_linear_head_can(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("val", 4)):
        for name, level in (("dark", 8000), ("bright", 50000)):
            for i in range(count):
                image = rng.normal(level, 2000, (2, 32, 32)).clip(0, 65535).astype(np.uint16)
                write_image(tmp_path / "cls" / split / name / f"{i}.tif", image)
    probe = LinearProbe(ProbeConfig(folder=str(tmp_path / "cls"), kind="classification"), 2, 32, MEAN, STD)
    result = probe.run(tiny_encoder(), torch.device("cpu"))
    assert result["probe_metric"] == "accuracy" and result["probe_score"] == 100.0
    assert probe.data.classes == ["bright", "dark"]


def test_probe_config_errors_are_one_line(tmp_path):
    with pytest.raises(UserInputError, match="eval.probe.kind: expected one of segmentation, classification, got 'x'"):
        load_config(PretrainConfig, None, ["eval.probe.kind=x"])
    with pytest.raises(UserInputError, match="eval.probe.every: expected an int >= 1"):
        load_config(PretrainConfig, None, ["eval.probe.every=0"])
    probe = LinearProbe(ProbeConfig(folder=str(tmp_path / "none")), 2, 32, MEAN, STD)
    with pytest.raises(UserInputError, match="eval.probe.folder: .*none is not a folder"):
        probe.run(tiny_encoder(), torch.device("cpu"))
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.tif", np.zeros((2, 32, 32), np.uint16))
    write_image(tmp_path / "flat" / "b.tif", np.zeros((2, 32, 32), np.uint16))
    probe = LinearProbe(ProbeConfig(folder=str(tmp_path / "flat"), kind="classification"), 2, 32, MEAN, STD)
    with pytest.raises(UserInputError, match="needs one sub-folder per class"):
        probe.run(tiny_encoder(), torch.device("cpu"))


@pytest.mark.slow
def test_a_run_with_the_probe_has_the_same_losses_and_records_its_scores(tmp_path):
    data = write_synthetic(tmp_path / "data", num=40, size=32, seed=1, progress=False)
    write_synthetic(tmp_path / "seg" / "train", num=12, size=32, seed=5, progress=False)
    write_synthetic(tmp_path / "seg" / "val", num=4, size=32, seed=6, progress=False)
    rows = {}
    for name, folder in (("plain", None), ("probed", str(tmp_path / "seg"))):
        config = tiny_pretrain(data, epochs=3)
        config.log.plots = False
        config.eval.probe.folder, config.eval.probe.every = folder, 2
        summary = pretrain(config, out=tmp_path / name)
        with open(tmp_path / name / "metrics.csv", newline="") as handle:
            rows[name] = list(csv.DictReader(handle))
        if folder:
            assert summary["probe_metric"] == "mIoU" and summary["best_probe_epoch"] in (2, 3)
            saved = json.loads((tmp_path / name / "summary.json").read_text())
            assert saved["best_probe_score"] == summary["best_probe_score"]
    for plain, probed in zip(rows["plain"], rows["probed"]):
        assert (plain["train_loss"], plain["val_loss"], plain["step"]) == (probed["train_loss"], probed["val_loss"],
                                                                          probed["step"])
    # every 2nd epoch and the last: epochs 2 and 3; epoch 1 has empty probe cells
    assert [r["probe_score"] != "" for r in rows["probed"]] == [False, True, True]
    assert rows["probed"][1]["probe_metric"] == "mIoU" and "probe_score" not in rows["plain"][0]


def test_probe_plot_skips_epochs_without_a_probe(tmp_path):
    from mae_dbp.train import plots

    rows = [{"epoch": 1, "train_seconds": 3.0}, {"epoch": 2, "train_seconds": 6.0, "probe_score": 20.0,
                                                 "probe_metric": "mIoU"}]
    path = plots.probe_curves({"run": rows}, tmp_path / "probe.png")
    assert path.stat().st_size > 1000


def test_bench_speedup_reads_dbps_time_and_steps_to_bps_best_probe_score():
    from mae_dbp.bench.compare import summarize
    from mae_dbp.bench.probe_reach import PROBE_KEYS, probe_pair
    from mae_dbp.bench.speedup_report import _probe_rows

    def rows(scores):
        return [{"epoch": i + 1, "step": 10 * (i + 1), "train_seconds": 4.0 * (i + 1), "probe_score": s,
                 "probe_metric": "mIoU"} for i, s in enumerate(scores)]

    pair = probe_pair(rows([10.0, math.nan, 20.0, 19.0]), rows([12.0, 21.0, 22.0, 22.0]))
    assert pair["bp_best_probe"] == 20.0 and pair["dbp_best_probe"] == 22.0
    assert (pair["bp_seconds_to_best_probe"], pair["dbp_seconds_to_bp_best_probe"]) == (12.0, 8.0)
    assert pair["probe_time_fraction"] == pytest.approx(2 / 3) and pair["probe_step_fraction"] == pytest.approx(2 / 3)
    never = probe_pair(rows([10.0, 20.0]), rows([5.0, 6.0]))
    assert never["dbp_seconds_to_bp_best_probe"] is None and never["probe_time_fraction"] is None
    assert probe_pair([{"epoch": 1, "step": 1, "train_seconds": 1.0}], rows([1.0])) == {}
    summary = {**summarize([pair, never], PROBE_KEYS), "probe_metric": "mIoU"}
    lines = dict(_probe_rows(summary))
    assert lines["DBP seconds to BP's best probe mIoU / BP's (probe resolution)"] == "**never (0.67 - never), never in 1**"


def test_a_bad_probe_folder_stops_the_run_before_training(tmp_path):
    config = tiny_pretrain(write_synthetic(tmp_path / "data", num=10, size=32, seed=1, progress=False), epochs=1)
    config.eval.probe.folder = str(tmp_path / "missing")
    with pytest.raises(UserInputError, match="eval.probe.folder: .*missing is not a folder"):
        pretrain(config, out=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()
