"""The long-horizon pieces of ``bench speedup``: the speed-up curve on a fixed pair of curves (hand-
computed expectations), the plateau share, and the long preset's step count and schedule span."""

from __future__ import annotations

import math

import pytest

from mae_dbp.bench import curves, horizon
from mae_dbp.errors import UserInputError

# BP: on a plateau from 20 s to 30 s (0.30 -> 0.32 is no improvement), best 0.10 at its end, 40 s
BP = [(10.0, 0.40), (20.0, 0.30), (30.0, 0.32), (40.0, 0.10)]
DBP = [(5.0, 0.45), (15.0, 0.25), (25.0, 0.20), (35.0, math.nan), (45.0, 0.05)]


def test_best_so_far_keeps_the_running_minimum_through_a_rise_and_a_nan():
    assert curves.best_so_far(BP) == [(10, 0.40), (20, 0.30), (30, 0.30), (40, 0.10)]
    assert curves.best_so_far(DBP)[3] == (35, 0.20)


def test_loss_at_and_seconds_to_interpolate_between_validation_points():
    assert curves.loss_at(BP, 15) == pytest.approx(0.35)
    assert curves.loss_at(BP, 25) == pytest.approx(0.30)  # flat best-so-far on the plateau
    assert curves.loss_at(BP, 5) is None and curves.loss_at(BP, 41) is None
    assert curves.seconds_to(BP, 0.30) == pytest.approx(20)
    assert curves.seconds_to(BP, 0.20) == pytest.approx(35)  # 30 + 10 * (0.30 - 0.20) / 0.20
    assert curves.seconds_to(BP, 0.50) == 10  # already there at the first validation
    assert curves.seconds_to(BP, 0.05) is None


def test_speedup_curve_on_a_fixed_pair():
    by_fraction = {p["fraction"]: p for p in curves.speedup_curve(BP, DBP)}
    # 25%: t = 10 s, BP's loss 0.40 (its first point, reached at 10 s); DBP reaches 0.40 at
    # 5 + 10 * 0.05 / 0.20 = 7.5 s; DBP's loss at 10 s: 0.45 - 0.20 * 5 / 10 = 0.35
    quarter = by_fraction[0.25]
    assert quarter["bp_loss"] == pytest.approx(0.40) and quarter["bp_seconds_to_loss"] == pytest.approx(10)
    assert quarter["dbp_seconds_to_loss"] == pytest.approx(7.5) and quarter["time_fraction"] == pytest.approx(0.75)
    assert quarter["loss_gap"] == pytest.approx(-0.05) and quarter["relative_loss_gap"] == pytest.approx(-0.125)
    # 50%: t = 20 s, loss 0.30 first reached by BP at 20 s, by DBP at 5 + 10 * 0.15 / 0.20 = 12.5 s;
    # DBP at 20 s: 0.225
    half = by_fraction[0.5]
    assert half["time_fraction"] == pytest.approx(0.625) and half["loss_gap"] == pytest.approx(-0.075)
    # 75%: t = 30 s, BP still at 0.30 (first reached at 20 s, not 30 s: both read "first reach");
    # DBP at 30 s: best-so-far 0.20 (the NaN at 35 s keeps it): gap -0.10
    three = by_fraction[0.75]
    assert three["bp_seconds_to_loss"] == pytest.approx(20) and three["time_fraction"] == pytest.approx(0.625)
    assert three["dbp_loss"] == pytest.approx(0.20) and three["relative_loss_gap"] == pytest.approx(-1 / 3)
    # 100%: t = 40 s, BP's best 0.10 at 40 s; DBP: 35 s (0.20) -> 45 s (0.05) reaches 0.10 at 35 + 10 * 0.10 / 0.15
    full = by_fraction[1.0]
    assert full["dbp_seconds_to_loss"] == pytest.approx(35 + 10 * 0.10 / 0.15)
    assert full["time_fraction"] == pytest.approx((35 + 10 * 0.10 / 0.15) / 40)
    assert full["dbp_loss"] == pytest.approx(0.20 - 0.15 * 0.5) and full["loss_gap"] == pytest.approx(0.025)
    # DBP's curve ending before BP's time: no gap rather than an extrapolation
    assert curves.speedup_curve(BP, DBP[:3], fractions=(1.0,))[0]["loss_gap"] is None


def test_improvement_share_by_a_third_of_the_run():
    # 1/3 of 40 s = 13.33 s: loss 0.40 - 0.10 * 3.33 / 10 = 0.3667 of a total improvement 0.40 -> 0.10
    assert curves.improvement_share(BP) == pytest.approx((0.40 - (0.40 - 0.1 / 3)) / 0.30)
    assert curves.improvement_share([(1.0, 0.2), (2.0, 0.3)]) is None  # never improved


class _Train:  # the two TrainConfig fields the batch plan reads
    def __init__(self, batch_size: int, effective_batch: int) -> None:
        self.batch_size, self.effective_batch = batch_size, effective_batch


def test_long_preset_steps_and_schedule_span_the_run():
    import torch
    from torch.utils.data import DataLoader

    from mae_dbp.config import load_config, shipped_configs
    from mae_dbp.train.pretrain import PretrainConfig
    from mae_dbp.train.schedules import WarmupCosine

    for name in ("tiny_photos_dbp.yaml", "small_photos_dbp.yaml"):
        train = load_config(PretrainConfig, shipped_configs() / "pretrain" / name).train
        epochs, steps = horizon.long_epochs(4000, train)
        assert (epochs, steps) == (12, 1500)  # 4000 // 32 = 125 steps per epoch
        # the loop's own count: optimizer steps = micro-batches of a drop_last loader // accumulation
        assert len(DataLoader(torch.zeros(4000), batch_size=32, drop_last=True)) * epochs == steps
        schedule = WarmupCosine(1e-3, total_steps=steps, warmup_steps=round(train.warmup_epochs * 125))
        assert schedule(steps - 1) < 1e-8 and schedule(schedule.warmup_steps) == pytest.approx(1e-3)
    # accumulation: micro-batches of 16 to an effective 64 -> 4100 // 16 // 4 = 64 steps per epoch
    assert horizon.long_epochs(4100, _Train(16, 64)) == (24, 24 * 64)
    assert horizon.long_epochs(4000, _Train(32, 32), min_steps=1501) == (13, 1625)


def test_long_preset_refuses_a_small_training_folder(tmp_path):
    with pytest.raises(UserInputError, match=r"needs at least 4000 training images, found 3999"):
        horizon.check_long_data(tmp_path / "train", 3999)
    horizon.check_long_data(tmp_path / "train", 4000)


@pytest.mark.slow
def test_plot_modules_leave_the_users_matplotlib_backend_alone():
    import subprocess
    import sys

    probe = ("import matplotlib; matplotlib.use('svg'); import mae_dbp.train.plots, mae_dbp.bench.speedup_report, "
             "segmentation.preview, sys; print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["svg", "False"]


def test_a_result_from_before_the_curves_is_reported_with_its_curve_computed():
    """A bench speedup process started on the older code ends by calling speedup_report.markdown_table
    on its old-format result: the report computes the curve from the result's recorded curves."""
    from mae_dbp.bench.compare import median_range
    from mae_dbp.bench.speedup_report import markdown_table

    keys = ("time_fraction", "epoch_fraction", "co2_fraction", "step_time_ratio", "bp_best_val_loss",
            "dbp_best_val_loss", "bp_seconds_to_best", "dbp_seconds_to_bp_best", "bp_cpu_per_wall", "dbp_cpu_per_wall")
    run = {"seed": 0, "bp_run": "bp-lr1-seed0", "dbp_run": "dbp-lr1-seed0", "bp_best_val_loss": 0.10,
           "dbp_best_val_loss": 0.05, "bp_seconds_to_best": 40.0, "bp_epoch_of_best": 4, "dbp_seconds_to_bp_best": 45.0,
           "time_fraction": 1.125, "epoch_fraction": 1.25, "to_threshold": {"0.3": {"bp_seconds": 20.0, "dbp_seconds": 15.0}},
           **{k: 1.0 for k in ("co2_fraction", "step_time_ratio", "bp_cpu_per_wall", "dbp_cpu_per_wall")}}
    old = {"settings": {"clock": "cpu", "threads": 1, "sweep_seeds": [0], "thresholds": [0.3], "epochs": 4},
           "sweep": {m: {"lrs": [1.0], "best_val_loss": [0.1], "chosen": 1.0} for m in ("bp", "dbp")},
           "runs": [run], "summary": {k: median_range([run[k]]) for k in keys},
           "curves": {"bp": {"0": [list(p) for p in BP]}, "dbp": {"0": [list(p) for p in DBP]}}}
    text = markdown_table(old)
    assert "| 50% | **0.62 (0.62 - 0.62)** | -0.0750 (-0.0750 - -0.0750) | -25.0% (-25.0% - -25.0%) |" in text
    assert "| 20.0 / 15.0 |" in text and "only 11% (range 11% - 11%) of its improvement" in text


@pytest.mark.slow
def test_long_plan_counts_k_crops_per_image_and_refuses_too_few_epochs(tmp_path, monkeypatch):
    from data_tools.photos import write_photos
    from mae_dbp.bench.speedup import SpeedupSettings, plan_horizon
    from mae_dbp.config import resolve_config_path

    pytest.importorskip("sklearn")
    monkeypatch.setattr(horizon, "LONG_MIN_IMAGES", 64)
    monkeypatch.setattr(horizon, "LONG_MIN_STEPS", 30)
    write_photos(tmp_path / "photos", size=32, train_crops=64, val_crops=16, seed=0)
    config = str(resolve_config_path("tiny_photos_dbp.yaml", "pretrain"))
    overrides = ("data.crops_per_image=2", "train.batch_size=8", "train.effective_batch=8")
    plan = plan_horizon(tmp_path / "photos", config, SpeedupSettings(horizon="long", epochs=None, overrides=overrides))
    # 64 images x 2 crops / 8 per step = 16 steps per epoch; 30 steps need 2 epochs
    assert plan == {"horizon": "long", "train_images": 64, "steps_per_epoch": 16, "epochs": 2, "planned_steps": 32}
    with pytest.raises(UserInputError, match=r"--epochs 1 gives 16 optimizer steps on 128 crops per epoch, fewer than 30"):
        plan_horizon(tmp_path / "photos", config, SpeedupSettings(horizon="long", epochs=1, overrides=overrides))
