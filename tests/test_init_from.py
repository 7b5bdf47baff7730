"""``model.init_from``: pretraining starts from a timm / mae-dbp export / facebookresearch-mae checkpoint
made here (nothing downloaded), adapting channels and positions, with DBP at R = I."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv

from data_tools.synthetic import write_synthetic
from mae_dbp.cli import main
from mae_dbp.config import load_config
from mae_dbp.data.io import write_image
from mae_dbp.errors import UserInputError
from mae_dbp.export import export_encoder
from mae_dbp.models.mae import build_mae
from mae_dbp.train.pretrain import PretrainConfig, build_model, pretrain
from tests.conftest import tiny_pretrain

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def timm_folder(path, in_chans: int = 3, img_size: int = 48, **args) -> dict[str, torch.Tensor]:
    """A timm ViT (``TINY`` unless ``args`` say otherwise) saved as model.safetensors in ``path``."""
    torch.manual_seed(1)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=img_size,
                            in_chans=in_chans, **{**TINY, **args})
    path.mkdir()
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    return state


def started(config: PretrainConfig, source) -> tuple[torch.nn.Module, list[str]]:
    config.model.init_from = str(source)
    lines: list[str] = []
    mae, _ = build_model(config, start_weights=True, say=lines.append)
    return mae, lines


def test_timm_folder_loads_with_channels_and_positions_adapted(tmp_path):
    state = timm_folder(tmp_path / "vit", in_chans=3, img_size=48)  # 6 x 6 patches, 3 channels
    config = tiny_pretrain(None)  # 32 px (4 x 4 patches), 2 channels, DBP
    mae, lines = started(config, f"local-dir:{tmp_path / 'vit'}")
    encoder = mae.encoder.state_dict()
    for key in ("blocks.0.norm1.weight", "blocks.1.mlp.fc2.weight", "norm.bias", "cls_token"):
        torch.testing.assert_close(encoder[key], state[key], rtol=0, atol=0)
    # DBP layers hold the loaded W (R = I)
    torch.testing.assert_close(encoder["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"], rtol=0, atol=0)
    assert torch.equal(encoder["blocks.0.attn.qkv.R"], torch.eye(32))
    torch.testing.assert_close(encoder["patch_embed.proj.weight"], adapt_input_conv(2, state["patch_embed.proj.weight"]))
    torch.testing.assert_close(encoder["pos_embed"], resample_abs_pos_embed(state["pos_embed"], [4, 4], [6, 6]))
    assert not mae.encoder.pos_embed.requires_grad
    assert lines == [f"model.init_from: loaded the encoder (30 tensors) from {tmp_path / 'vit' / 'model.safetensors'}, "
                     "adapted positions 6x6 -> 4x4, patch embedding 3 -> 2 channels; decoder: left new (none in the checkpoint)"]


def test_dbp_on_a_loaded_encoder_keeps_its_function(tmp_path):
    timm_folder(tmp_path / "vit", in_chans=2, img_size=32)
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, in_chans=2, **TINY)
    plain.load_state_dict(load_file(str(tmp_path / "vit" / "model.safetensors")))
    mae, lines = started(tiny_pretrain(None), tmp_path / "vit" / "model.safetensors")
    assert "adapted" not in lines[0]
    images = torch.randn(3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    plain.eval(), mae.eval()
    with torch.no_grad():
        torch.testing.assert_close(mae.encoder.forward_features(images), plain.forward_features(images))


def test_facebook_mae_checkpoint_loads_encoder_and_matching_decoder(tmp_path):
    source = tiny_pretrain(None)
    source.model.in_chans = 3
    torch.manual_seed(2)
    reference = build_mae(source.model)  # the layout of facebookresearch/mae: encoder at the top, decoder_* beside
    fb = {k.removeprefix("encoder."): v for k, v in reference.state_dict().items()}
    fb["head.weight"] = torch.zeros(10, 32)  # a classifier head is ignored
    torch.save({"model": fb, "epoch": 799}, tmp_path / "mae_pretrain.pth")
    mae, lines = started(tiny_pretrain(None), tmp_path / "mae_pretrain.pth")
    torch.testing.assert_close(mae.decoder_blocks[0].mlp.fc1.weight, reference.decoder_blocks[0].mlp.fc1.weight)
    torch.testing.assert_close(mae.mask_token, reference.mask_token)
    assert mae.decoder_pred.weight.shape[0] == 8 * 8 * 2  # 2 channels: left new
    assert "adapted patch embedding 3 -> 2 channels" in lines[0]
    assert lines[0].endswith("left new: decoder_pred")
    source.model.decoder.depth = 2  # another decoder depth: the decoder is left new, the line says why
    torch.save({"model": {k.removeprefix("encoder."): v for k, v in build_mae(source.model).state_dict().items()}},
               tmp_path / "deeper.pth")
    mae, lines = started(tiny_pretrain(None), tmp_path / "deeper.pth")
    assert lines[0].endswith("decoder: left new (the checkpoint's has 2 blocks, model.decoder.depth is 1; set it to 2 "
                             "to load them)")


@pytest.mark.parametrize("args, key, shapes", [
    ({"embed_dim": 64}, "cls_token", "checkpoint (1, 1, 64), model expects (1, 1, 32)"),
    ({"depth": 3}, "blocks.2.attn.proj.bias", "checkpoint (32,), model expects nothing (no such key in model.encoder)"),
    ({"patch_size": 16}, "patch_embed.proj.weight", "checkpoint (32, 3, 16, 16), model expects (32, 2, 8, 8)"),
])
def test_another_architecture_is_one_line_naming_the_first_mismatch(tmp_path, args, key, shapes):
    timm_folder(tmp_path / "vit", **args)
    with pytest.raises(UserInputError) as error:
        started(tiny_pretrain(None), tmp_path / "vit")
    message = str(error.value)
    assert "\n" not in message and "another architecture" in message and f"first mismatch {key}: {shapes}" in message


def test_missing_or_unreadable_source_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match=r"model.init_from: .*nowhere.pth does not exist"):
        started(tiny_pretrain(None), tmp_path / "nowhere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=r"model.init_from: cannot read .*junk.pth"):
        started(tiny_pretrain(None), tmp_path / "junk.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="holds none of model.safetensors"):
        started(tiny_pretrain(None), tmp_path / "empty")


@pytest.mark.slow
def test_shipped_from_mae_recipe_loads_and_names_its_placeholder():
    config = load_config(PretrainConfig, "configs/pretrain/industrial_vit_base_from_mae_dbp.yaml")
    assert config.model.in_chans == 2 and config.model.init_from and config.decor.enabled
    with pytest.raises(UserInputError, match="model.init_from: .* does not exist"):
        build_model(config, start_weights=True)


@pytest.mark.slow
def test_tiny_cpu_dbp_starts_from_a_3_channel_export_of_ours(tmp_path, capsys):
    rgb = tmp_path / "rgb"
    rng = np.random.default_rng(0)
    for i in range(16):
        write_image(rgb / f"im_{i:02d}.png", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    source = load_config(PretrainConfig, "configs/pretrain/tiny_cpu_dbp.yaml",
                         [f"data.root={rgb}", "model.in_chans=3", "data.mean=[128]", "data.std=[64]", "train.epochs=1",
                          "train.batch_size=8", "train.effective_batch=8", "log.plots=false", "log.emissions=false"])
    pretrain(source, out=tmp_path / "rgb_run")
    export_encoder(tmp_path / "rgb_run", tmp_path / "export")
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    data = write_synthetic(tmp_path / "syn", num=48, size=64, seed=1, progress=False)
    overrides = [f"data.root={data}", f"model.init_from={tmp_path / 'export'}", "train.epochs=1", "log.plots=false",
                 "log.emissions=false"]
    config = load_config(PretrainConfig, "configs/pretrain/tiny_cpu_dbp.yaml", overrides)
    mae, _ = build_model(config, start_weights=True, say=lambda line: None)  # the run's model before its first step
    for key, value in exported.items():
        if key.startswith("blocks."):
            torch.testing.assert_close(mae.encoder.state_dict()[key], value, rtol=0, atol=0)
    assert main(["pretrain", "--config", "configs/pretrain/tiny_cpu_dbp.yaml", "--out", str(tmp_path / "run"),
                 *overrides]) == 0
    assert "adapted patch embedding 3 -> 2 channels" in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_done"] == 1 and np.isfinite(summary["best_val_loss"])
