"""Fused export of a pretraining run loads into plain timm and keeps the DBP encoder's features."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from mae_dbp import decor
from mae_dbp.cli import main
from mae_dbp.config import load_config
from mae_dbp.export import export_encoder
from mae_dbp.train import checkpoints
from mae_dbp.train.pretrain import PretrainConfig, build_model, pretrain
from tests.conftest import tiny_pretrain


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data, tiny_dbp_run):
    """The shared finished DBP run, and a BP run of the same config and data."""
    base = tmp_path_factory.mktemp("export")
    config = tiny_pretrain(tiny_data, epochs=2)
    config.decor.enabled, config.log.plots = False, False
    pretrain(config, out=base / "bp")
    return {"dbp": tiny_dbp_run, "bp": base / "bp"}


@pytest.mark.slow
def test_export_loads_strictly_in_timm_with_the_same_features(runs, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(runs["dbp"]), "--out", str(out), "--format", "both"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert len(meta["mae_dbp"]["fused_sites"]) == 5
    state = load_file(out / "model.safetensors")
    assert not any(k.endswith((".R", "_extra_state")) for k in state)
    # the plain timm model, built the way a downstream user does, loads the file strictly
    plain = timm.create_model(meta["architecture"], pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")), **meta["model_args"])
    missing, unexpected = plain.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    # its features equal the unfused DBP encoder's, computed as W (R x)
    config = load_config(PretrainConfig, runs["dbp"] / "config.yaml")
    mae, _ = build_model(config)
    mae.load_state_dict(checkpoints.model_state(runs["dbp"] / "best"))
    images = torch.randn(3, 2, 32, 32)
    plain.eval()
    mae.eval()
    with torch.no_grad(), decor.explicit(mae.encoder):
        reference = mae.encoder.forward_features(images)
        assert (plain.forward_features(images) - reference).abs().max() <= 1e-4
    # R was really learned, so the check above is not trivially W == W R
    r = checkpoints.model_state(runs["dbp"] / "best")["encoder.blocks.0.mlp.fc1.R"]
    assert (r - torch.eye(r.shape[0])).abs().max() > 1e-6
    check_mmseg_mae_backbone(out / "mmseg_backbone.pth", plain, images)


def check_mmseg_mae_backbone(path, plain, images):
    """Stock mmseg's MAE backbone loads mmseg_backbone.pth and computes the timm encoder's blocks."""
    from segmentation import compat

    compat.ensure()
    from mmseg.models.backbones import MAE

    state = torch.load(path, weights_only=True)["state_dict"]
    depth = len(plain.blocks)
    backbone = MAE(img_size=32, patch_size=8, in_channels=2, embed_dims=32, num_layers=depth, num_heads=2,
                   out_indices=(depth - 1,), final_norm=True, norm_cfg=dict(type="LN", eps=1e-6))
    backbone.eval()  # mmseg's BEiT.train() returns None, so not chained
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    assert not unexpected and all("relative_position" in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        (features,) = backbone(images)  # (B, D, h, w) after the final norm
        tokens = plain.forward_features(images)[:, 1:]  # timm: blocks + final norm, patch tokens
    expected = tokens.transpose(1, 2).reshape(features.shape)
    assert (features - expected).abs().max() <= 1e-4


@pytest.mark.slow
def test_bp_export_and_no_overwrite_without_force(runs, tmp_path, capsys):
    out = tmp_path / "bp"
    meta = export_encoder(runs["bp"], out)
    assert meta["mae_dbp"]["fused_sites"] == []
    before = (out / "model.safetensors").read_bytes()
    assert main(["export", str(runs["dbp"]), "--out", str(out)]) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before  # untouched
    export_encoder(runs["dbp"], out, force=True)
    assert (out / "model.safetensors").read_bytes() != before


def test_export_bad_source_is_one_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no best/ or last/ checkpoint there" in capsys.readouterr().err
