"""``mae-dbp pretrain --config RECIPE --smoke``: a shipped recipe, small, on the user's own folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from mae_dbp.cli import main
from mae_dbp.train.pretrain import PretrainConfig
from mae_dbp.train.smoke import smoke_config

RECIPE = "configs/pretrain/industrial_vit_base_dbp.yaml"


def write_folder(root, count: int = 24, size: int = 80, channels: int = 2) -> None:
    """``count`` random 16-bit ``channels``-channel TIFFs (channels-first pages) of ``size`` px."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        tifffile.imwrite(root / f"tile_{i:03d}.tif", rng.integers(0, 65535, (channels, size, size), dtype=np.uint16))


def test_smoke_config_shrinks_model_batch_and_length_but_keeps_data_and_method(tmp_path):
    write_folder(tmp_path / "tiles", count=4)
    config, line = smoke_config(PretrainConfig, RECIPE, [f"data.root={tmp_path / 'tiles'}"])
    assert config.model.in_chans == 2 and config.model.img_size == 64
    assert config.model.encoder_args["depth"] == 4 and config.train.effective_batch == 16
    assert config.train.mixed_precision == "no" and config.data.num_workers == 0 and config.data.val_root is None
    assert list(config.data.crop_scale) == [0.05, 0.5] and config.decor.enabled and config.train.optimizer == "muon"
    assert config.decor.lr_schedule == "cosine"
    # the recipe's peak lr: 6.25e-5 x 4096 / 256 = 1e-3
    assert config.train.base_lr * config.train.effective_batch / 256 == pytest.approx(1e-3)
    # the recipe's stats.json does not exist here: statistics of the folder's images instead
    assert config.data.stats is None and len(config.data.mean) == 2 and 20000 < config.data.mean[0] < 45000
    assert line.startswith("smoke run: shrank vit_base_patch16_224 at 224 px to vit_tiny_patch16_224")
    assert "kept in_chans 2" in line and "statistics of 4 image(s)" in line
    assert "\n" not in line


def test_the_users_overrides_win_over_the_shrinking(tmp_path):
    write_folder(tmp_path / "tiles", count=2)
    (tmp_path / "tiles" / "stats.json").write_text(json.dumps({"mean": [1.0, 2.0], "std": [3.0, 4.0]}))
    config, line = smoke_config(PretrainConfig, RECIPE, [f"data.root={tmp_path / 'tiles'}", "model.img_size=96",
                                                           "train.epochs=1"])
    assert config.model.img_size == 96 and config.train.epochs == 1
    assert config.data.stats == str(tmp_path / "tiles" / "stats.json") and "stats.json" in line


@pytest.mark.slow
def test_industrial_recipe_smoke_run_finishes_on_a_2_channel_16_bit_folder(tmp_path, capsys):
    write_folder(tmp_path / "tiles")
    out = tmp_path / "run"
    assert main(["pretrain", "--config", RECIPE, "--smoke", "--out", str(out), f"data.root={tmp_path / 'tiles'}",
                 "log.plots=false"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("smoke run: shrank vit_base_patch16_224")
    assert "effective batch 16" in printed and "peak lr 0.001" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and np.isfinite(summary["best_val_loss"])
    saved = (out / "config.yaml").read_text()
    assert "in_chans: 2" in saved and "embed_dim: 96" in saved


def test_smoke_with_init_from_keeps_the_checkpoints_architecture(tmp_path):
    write_folder(tmp_path / "tiles", count=2)
    config, line = smoke_config(PretrainConfig, "configs/pretrain/industrial_vit_base_from_mae_dbp.yaml",
                                [f"data.root={tmp_path / 'tiles'}"])
    assert config.model.encoder == "vit_base_patch16_224" and config.model.encoder_args == {}
    assert config.model.decoder.dim == 512 and config.model.img_size == 64 and config.train.effective_batch == 16
    assert line.startswith("smoke run: shrank vit_base_patch16_224 at 224 px to vit_base_patch16_224 (kept for "
                           "model.init_from) at 64 px, batch 4096 to 16")


def test_smoke_refuses_resume_and_a_missing_folder_in_one_line(tmp_path, capsys):
    assert main(["pretrain", "--config", RECIPE, "--smoke", "--resume", str(tmp_path)]) == 2
    assert "--smoke and --resume exclude each other" in capsys.readouterr().err
    assert main(["pretrain", "--config", RECIPE, "--smoke", f"data.root={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none does not exist" in err[0]
