"""MAE pretraining runs end to end on small generated 2-channel 16-bit data (CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mae_dbp.cli import main
from mae_dbp.data.io import write_image
from mae_dbp.errors import UserInputError
from mae_dbp.train import checkpoints
from mae_dbp.train.records import read_csv
from mae_dbp.train.pretrain import pretrain
from tests.conftest import accelerate_launch, tiny_pretrain, write_config

pytestmark = [pytest.mark.slow]

@pytest.fixture
def synthetic(tiny_data):
    return tiny_data


def rows(run_dir):
    return read_csv(run_dir / "metrics.csv")


def test_tiny_dbp_run_lowers_validation_loss_and_writes_run_dir(synthetic, tmp_path):
    run = tmp_path / "dbp"
    config = tiny_pretrain(synthetic, epochs=4)
    config.log.emissions = True
    summary = pretrain(config, out=run)
    metrics = rows(run)
    assert len(metrics) == 4
    assert float(metrics[-1]["val_loss"]) < float(metrics[0]["val_loss"])
    assert {"epoch", "step", "train_seconds", "train_loss", "val_loss", "lr", "decor_lr", "decor_metric"} <= set(metrics[0])
    assert summary["decor_sites"] == ["blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.1.attn.qkv", "blocks.1.mlp.fc1", "patch_embed.proj"]
    on_disk = json.loads((run / "summary.json").read_text())
    best = min(metrics, key=lambda r: r["val_loss"])  # the summary's values are the CSV's, at the best epoch
    assert on_disk["best_val_loss"] == pytest.approx(best["val_loss"])
    assert on_disk["best_epoch"] == best["epoch"] and on_disk["epochs_done"] == metrics[-1]["epoch"] == 4
    assert on_disk["train_seconds_to_best"] == pytest.approx(best["train_seconds"], abs=1e-3)
    assert on_disk["train_seconds_total"] == pytest.approx(metrics[-1]["train_seconds"], abs=1e-3)
    assert on_disk["train_seconds_to_best"] <= on_disk["train_seconds_total"]
    assert on_disk["decor_sites"] == summary["decor_sites"]
    assert on_disk["kg_co2"] == pytest.approx(metrics[-1]["kg_co2"], rel=1e-3, abs=1e-12) and on_disk["kwh"] >= 0
    assert (run / "emissions.csv").is_file()
    for name in ("config.yaml", "best/pytorch_model.bin", "last/pytorch_model.bin", "loss_vs_time.png",
                 "decorrelation.png", "reconstructions.png"):
        assert (run / name).is_file(), name
    # the best checkpoint carries R for every site, and training changed it
    state = checkpoints.model_state(run / "best")
    r = state["encoder.blocks.0.attn.qkv.R"]
    assert not torch.equal(r, torch.eye(r.shape[0]))
    # never overwrite a finished run
    with pytest.raises(FileExistsError, match=r"metrics.csv already exists \(use --resume"):
        pretrain(tiny_pretrain(synthetic, epochs=1), out=run)


@pytest.mark.parametrize("optimizer", ["adamw", "muon", "mud"])
def test_resume_continues_the_same_curve(synthetic, tmp_path, optimizer):
    config = tiny_pretrain(synthetic, epochs=4)
    config.train.optimizer = optimizer
    pretrain(config, out=tmp_path / "straight")
    config.train.stop_after_epoch = 2
    pretrain(config, out=tmp_path / "split")
    assert len(rows(tmp_path / "split")) == 2
    assert "stop_after_epoch: null" in (tmp_path / "split" / "config.yaml").read_text()  # not part of the run
    assert main(["pretrain", "--resume", str(tmp_path / "split")]) == 0  # continues with the run's own config
    straight, split = rows(tmp_path / "straight"), rows(tmp_path / "split")
    assert len(split) == 4
    assert float(straight[-1]["val_loss"]) < float(straight[0]["val_loss"])  # every optimizer trains the DBP MAE
    assert f"optimizer: {optimizer}" in (tmp_path / "split" / "config.yaml").read_text()
    for a, b in zip(straight, split):
        for key in ("step", "train_loss", "val_loss", "lr", "decor_lr", "decor_metric"):
            assert float(a[key]) == float(b[key]), (key, a, b)  # bit-exact: optimizer state and RNG resumed


def _resume_case(case, synthetic, tmp_path):
    """A 3-epoch tiny config whose resume after epoch 2 has more state to carry than the default."""
    data = with_extra_image(synthetic, tmp_path / "huge", "zz_huge.tif", 1e30) if case == "guard_restore" else synthetic
    config = tiny_pretrain(data, epochs=3)
    config.log.plots = False
    if case == "update_every_mid_cycle":  # 4 steps per epoch: the split falls 2 steps into a 3-step cycle,
        config.decor.update_every = 3  # so the kept subsamples of those 2 steps must survive the resume
    elif case == "accumulation":  # 2 micro-batches per optimizer step, deferred W gradients
        config.train.batch_size = 4
    elif case == "crops_per_image":  # 2 crops per image read: 8 optimizer steps per epoch
        config.data.crops_per_image = 2
    elif case == "guard_restore":  # a huge image overflows the forward: the guard restores and halves the R lr
        config.data.val_fraction, config.train.guard.max_restores = 0.1, 2
    return config


# found by this test: a resume 2 steps into a 3-step R cycle is not bit-exact (all weights differ
# after the next epoch; with update_every=2, split at the end of a cycle, it is). The kept rows and the
# subsample generator do round-trip through the checkpoint (checked by hand); the cause is still open.
MID_CYCLE = pytest.param("update_every_mid_cycle", marks=pytest.mark.xfail(
    strict=True, reason="resume mid-way through an update_every cycle is not bit-exact yet"))


@pytest.mark.parametrize("case", [MID_CYCLE, "accumulation", "crops_per_image", "guard_restore"])
def test_resume_is_bit_exact_with_more_state_to_carry(synthetic, tmp_path, case):
    config = _resume_case(case, synthetic, tmp_path)
    straight_summary = pretrain(config, out=tmp_path / "straight")
    config.train.stop_after_epoch = 2
    pretrain(config, out=tmp_path / "split")
    assert main(["pretrain", "--resume", str(tmp_path / "split")]) == 0
    straight, split = rows(tmp_path / "straight"), rows(tmp_path / "split")
    assert len(straight) == len(split) == 3
    for a, b in zip(straight, split):
        for key in ("step", "train_loss", "val_loss", "lr", "decor_lr", "decor_metric"):
            assert a[key] == b[key], (key, a, b)
    weights = [checkpoints.model_state(tmp_path / name / "last") for name in ("straight", "split")]
    for key, tensor in weights[0].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, weights[1][key]), key
    r = weights[0]["encoder.blocks.0.attn.qkv.R"]
    assert not torch.equal(r, torch.eye(r.shape[0]))
    split_summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    if case == "guard_restore":  # the guard fired before the split, and its state carried over
        assert straight_summary["guard_events"] and split_summary["guard_events"] == straight_summary["guard_events"]
    if case == "crops_per_image":
        assert straight[0]["step"] == 8
    if case == "update_every_mid_cycle":
        assert straight[1]["step"] % 3 != 0


def with_extra_image(synthetic, folder, name, value, count=None):
    """The synthetic images plus one 2-channel float image filled with ``value``."""
    folder.mkdir()
    for path in sorted((synthetic / "images").iterdir())[:count]:
        (folder / path.name).symlink_to(path)
    write_image(folder / name, np.full((2, 32, 32), value, dtype=np.float32))
    return folder


def test_guard_restores_on_non_finite_loss_from_finite_inputs(synthetic, tmp_path):
    """Huge but finite pixels overflow the forward pass: instability, so the guard restores last/."""
    data = with_extra_image(synthetic, tmp_path / "huge", "zz_huge.tif", 1e30)
    config = tiny_pretrain(data, epochs=3)
    config.data.val_fraction, config.train.guard.max_restores = 0.1, 2
    summary = pretrain(config, out=tmp_path / "guarded")
    events = summary["guard_events"]
    assert events and events[0]["reason"] == "non-finite training loss"
    assert events[0]["decor_lr_scale"] == pytest.approx(0.5)
    assert any(e["decor_updates"] == "stopped" for e in events)
    assert summary["epochs_done"] == 3 and math.isfinite(summary["best_val_loss"])
    assert all(math.isfinite(float(r["train_loss"])) for r in rows(tmp_path / "guarded"))


def test_non_finite_inputs_are_a_data_error_naming_the_file(synthetic, tmp_path):
    data = with_extra_image(synthetic, tmp_path / "with_nan", "zz_nan.tif", np.nan)
    config = tiny_pretrain(data, epochs=3)
    config.data.val_fraction = 0.1
    with pytest.raises(UserInputError, match=r"zz_nan.tif: 2048 NaN/Inf pixels"):  # the reader's check
        pretrain(config, out=tmp_path / "run")
    # finite pixels that become non-finite inputs (a degenerate std): the loop names the batch's files
    config = tiny_pretrain(synthetic, epochs=1)
    config.data.std = [1e-40, 1e-40]
    with pytest.raises(UserInputError, match=r"non-finite model inputs \(nan/inf\) from .*\.tif.*check data.mean/std"):
        pretrain(config, out=tmp_path / "run2")


def test_guard_off_fails_loudly(synthetic, tmp_path):
    data = with_extra_image(synthetic, tmp_path / "huge", "zz_huge.tif", 1e30, count=16)
    config = tiny_pretrain(data, epochs=3)
    config.data.val_fraction, config.train.guard.enabled = 0.1, False
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        pretrain(config, out=tmp_path / "run")


def test_bad_inputs_give_one_line_errors(synthetic, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochs: 1\n  epoch: 2\n")
    assert main(["pretrain", "--config", str(config)]) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err

    args = ["pretrain", "--config", "configs/pretrain/tiny_cpu_dbp.yaml", "--out", str(tmp_path / "r")]
    assert main(args + [f"data.root={synthetic}", "model.in_chans=3", "data.mean=[0]", "data.std=[1]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mae-dbp: error: ") and "expected 3 channels, found 2" in err and len(err.splitlines()) == 1

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in sorted((synthetic / "images").iterdir())[:12]:
        (corrupt / path.name).symlink_to(path)
    (corrupt / "broken.tif").write_bytes(b"II*\x00not really a tiff")
    assert main(args + [f"data.root={corrupt}", "data.val_fraction=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("mae-dbp: error: ") and "broken.tif" in err and "cannot read image" in err

    config = tiny_pretrain(corrupt, epochs=1)
    config.data.skip_bad = True
    summary = pretrain(config, out=tmp_path / "skip")
    assert [p.endswith("broken.tif") for p in summary["bad_files"]] == [True]

    assert main(["pretrain", "--config", "configs/pretrain/tiny_cpu_dbp.yaml", "--out", str(tmp_path / "m"),
                 f"data.root={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.dist
def test_two_cpu_ranks_through_accelerate_keep_r_identical(synthetic, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU gives two gloo ranks; the loop
    checks every epoch that all ranks hold the same R (and raises if not)."""
    run = tmp_path / "dist"
    config = tiny_pretrain(synthetic)
    config.train.batch_size = 2  # 2 per rank x 2 accumulation steps x 2 ranks: deferred W gradients under DDP
    result = accelerate_launch(2, "-m", "mae_dbp", "pretrain", "--out", run,
                               "--config", write_config(config, tmp_path / "tiny.yaml"), timeout=300)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["decor_ranks_checked"] == 2  # ranks_agree() ran on 2 ranks each epoch and passed
    assert summary["effective_batch"] == 8  # as configured: 2 per rank x 2 steps x 2 ranks, not 8 x 2
    assert "2 process(es) x 2 images x 2 accumulation step(s)" in result.stdout
    assert len(rows(run)) == 2


def test_deferred_weight_gradients_train_the_same_model_when_accumulating(synthetic, tmp_path):
    # 2 micro-batches of 4 per optimizer step: the fused layers (here the patch embedding) sum
    # dL/dA over both and apply Rᵀ once; the weights must match the run that applies it per backward
    states = {}
    for defer in (True, False):
        config = tiny_pretrain(synthetic, epochs=2)
        config.train.batch_size, config.train.effective_batch = 4, 8
        config.decor.defer_weight_grad = defer
        pretrain(config, out=tmp_path / str(defer))
        states[defer] = checkpoints.model_state(tmp_path / str(defer) / "last")
    r = states[True]["encoder.patch_embed.proj.R"]
    assert not torch.allclose(r, torch.eye(r.shape[0]), atol=1e-4)  # R moved, so Rᵀ matters
    for name, tensor in states[False].items():  # float32 rounding apart (AdamW can enlarge it in elements
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():  # whose gradient is ~0: 3e-5 seen)
            tolerance = 1e-5 if name.endswith(".R") else 1e-4  # without finish_weight_grads: R 1e-3, W 2e-4 off
            torch.testing.assert_close(states[True][name], tensor, rtol=0, atol=tolerance, msg=name)
