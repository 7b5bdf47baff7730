"""MAE model: masking, loss on masked patches only, patchify, sin-cos positions, timm compatibility."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from mae_dbp.config import load_config
from mae_dbp.errors import UserInputError
from mae_dbp.models.mae import (
    DecoderConfig,
    MAEConfig,
    MaskedAutoencoder,
    build_encoder,
    build_mae,
    fixed_noise,
    masked_loss,
    normalize_patches,
    patchify,
    unpatchify,
)
from mae_dbp.models.pos_embed import sincos_2d
from mae_dbp.train.pretrain import PretrainConfig

NAME = "vit_base_patch16_224"
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def tiny_cfg(in_chans: int = 2, **extra) -> MAEConfig:
    cfg = MAEConfig(encoder=NAME, img_size=32, in_chans=in_chans, encoder_args=dict(TINY),
                    decoder=DecoderConfig(dim=16, depth=1, heads=2), mask_ratio=0.75, norm_pix_loss=False)
    return dataclasses.replace(cfg, **extra)


@pytest.fixture
def model() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return build_mae(tiny_cfg())


def test_shapes_and_exact_mask_ratio(model):
    images = torch.randn(5, 2, 32, 32)
    loss, pred, mask = model(images)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (5, 16, 8 * 8 * 2)
    assert mask.shape == (5, 16)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask.sum(dim=1) == 16 - int(16 * (1 - 0.75))).all()  # 12 masked, 4 visible per sample
    assert len({tuple(m.tolist()) for m in mask}) > 1  # samples get different masks


def test_mask_ratio_counts_for_odd_ratios():
    torch.manual_seed(0)
    model = build_mae(tiny_cfg(mask_ratio=0.9, img_size=80))  # L = 100, 10 visible
    _, _, mask = model(torch.randn(3, 2, 80, 80))
    assert (mask.sum(dim=1) == 90).all()


def test_fixed_noise_gives_identical_masks(model):
    images = torch.randn(4, 2, 32, 32)
    noise = fixed_noise(4, model.num_patches, seed=3)
    assert torch.equal(noise, fixed_noise(4, model.num_patches, seed=3))
    assert not torch.equal(noise, fixed_noise(4, model.num_patches, seed=4))
    model.eval()
    loss_a, pred_a, mask_a = model(images, noise)
    loss_b, pred_b, mask_b = model(images, noise)
    assert torch.equal(mask_a, mask_b) and torch.equal(pred_a, pred_b) and loss_a == loss_b
    # the kept patches are the ones with the smallest noise
    keep = noise.argsort(dim=1)[:, :4]
    assert (mask_a.gather(1, keep) == 0).all()


def test_masked_loss_matches_reference_and_ignores_visible_targets():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 6, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 0, 1]], dtype=torch.float32)
    terms = [((pred[b, i] - target[b, i]) ** 2).mean() for b in range(3) for i in range(6) if mask[b, i]]
    expected = torch.stack(terms).mean()
    assert torch.allclose(masked_loss(pred, target, mask), expected)
    changed = target.clone()
    changed[mask == 0] = 1e3  # visible patches: anything
    assert torch.allclose(masked_loss(pred, changed, mask), expected)
    changed[0, 0] += 1.0  # a masked patch does count
    assert not torch.allclose(masked_loss(pred, changed, mask), expected)


def test_model_loss_ignores_visible_target_pixels(model):
    """Same encoder input, a target image that differs only in visible patches: same loss."""
    images = torch.randn(2, 2, 32, 32)
    noise = fixed_noise(2, model.num_patches, seed=0)
    model.eval()
    _, pred, mask = model(images, noise)
    target = patchify(images, 8)
    altered = target.clone()
    altered[mask == 0] = torch.randn_like(altered[mask == 0]) * 100
    assert torch.allclose(masked_loss(pred, target, mask), masked_loss(pred, altered, mask))
    assert torch.allclose(model(images, noise)[0], masked_loss(pred, target, mask))


def test_patchify_round_trip_and_order():
    images = torch.randn(2, 3, 24, 16)
    patches = patchify(images, 8)
    assert patches.shape == (2, 3 * 2, 8 * 8 * 3)
    # patch (row 1, col 0), pixel (2, 5), channel 1
    assert patches[1, 2, (2 * 8 + 5) * 3 + 1] == images[1, 1, 8 + 2, 5]
    assert torch.equal(unpatchify(patches, 8, 3, 3, 2), images)


def test_norm_pix_target_is_standardised_per_patch():
    patches = torch.rand(2, 4, 128) * 1000 + 50
    normed = normalize_patches(patches)
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 4), atol=1e-4)
    assert torch.allclose(normed.std(-1), torch.ones(2, 4), atol=1e-4)
    torch.manual_seed(0)
    model = build_mae(tiny_cfg(norm_pix_loss=True))
    images = torch.rand(2, 2, 32, 32) * 500
    assert torch.allclose(model.target(images), normalize_patches(patchify(images, 8)))
    loss, pred, mask = model(images)
    assert torch.isfinite(loss) and loss.item() < 10  # raw pixels in 0..500 would give ~1e5


def test_pos_embed_fixed_sincos_with_zero_cls_row(model):
    enc = model.encoder
    assert enc.pos_embed.shape == (1, 1 + 16, 32) and not enc.pos_embed.requires_grad
    assert torch.equal(enc.pos_embed[0, 0], torch.zeros(32))
    assert torch.allclose(enc.pos_embed[0], sincos_2d(32, (4, 4), num_prefix=1))
    assert model.decoder_pos_embed.shape == (1, 17, 16)
    assert "decoder_pos_embed" not in dict(model.named_parameters())
    table = sincos_2d(8, (2, 3))
    assert table.shape == (6, 8) and len({tuple(r.tolist()) for r in table}) == 6


def test_encoder_without_embedded_class_row():
    enc = build_encoder(NAME, 32, 2, no_embed_class=True, **TINY)
    assert enc.pos_embed.shape == (1, 16, 32)
    torch.manual_seed(0)
    model = MaskedAutoencoder(enc, DecoderConfig(dim=16, depth=1, heads=2), mask_ratio=0.75, norm_pix_loss=False)
    loss, pred, _ = model(torch.randn(2, 2, 32, 32))
    assert pred.shape == (2, 16, 128) and torch.isfinite(loss)


@pytest.mark.slow
@pytest.mark.parametrize("in_chans", [1, 2, 3])
def test_encoder_state_dict_loads_strictly_into_plain_timm(in_chans):
    torch.manual_seed(0)
    model = build_mae(tiny_cfg(in_chans=in_chans))
    assert (model.in_chans, model.img_size) == (in_chans, 32)  # what the data pipeline is given
    loss, pred, _ = model(torch.randn(2, in_chans, 32, 32))
    assert pred.shape == (2, 16, 64 * in_chans)
    loss.backward()
    plain = timm.create_model(NAME, pretrained=False, num_classes=0, img_size=32, in_chans=in_chans, **TINY)
    result = plain.load_state_dict(model.encoder.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert type(model.encoder) is type(plain)
    plain.eval(), model.encoder.eval()
    x = torch.randn(1, in_chans, 32, 32)
    assert torch.allclose(plain(x), model.encoder(x))


def test_forward_runs_through_timm_submodules(model):
    """DBP wrappers replace these modules by name, so the MAE forward must call them."""
    calls: dict[str, tuple] = {}
    names = ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.1.mlp.fc1", "norm"]
    for name in names:
        model.encoder.get_submodule(name).register_forward_hook(
            lambda mod, inp, out, name=name: calls.__setitem__(name, tuple(inp[0].shape))
        )
    model(torch.randn(3, 2, 32, 32))
    assert set(calls) == set(names)
    assert calls["blocks.0.attn.qkv"] == (3, 1 + 4, 32)  # cls + visible tokens only


def test_decor_wrappers_are_used(model):
    from mae_dbp import decor

    wrapped = decor.apply(model.encoder, ["patch_embed.proj", "blocks.*.attn.qkv", "blocks.*.mlp.fc1"])
    assert len(wrapped) == 5
    seen = []
    for _, module in decor.decor_modules(model.encoder):
        module.register_forward_hook(lambda *a: seen.append(1))
    loss, _, _ = model(torch.randn(2, 2, 32, 32))
    loss.backward()
    assert len(seen) == 5


@pytest.mark.slow
def test_loss_decreases_on_a_fixed_batch(model):
    torch.manual_seed(1)
    images = torch.randn(4, 2, 32, 32)
    noise = fixed_noise(4, model.num_patches, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for _ in range(20):
        loss, _, _ = model(images, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert not model.encoder.pos_embed.requires_grad


def test_reconstruct_keeps_visible_patches(model):
    images = torch.randn(2, 2, 32, 32)
    loss, pred, mask = model(images)
    masked, recon = model.reconstruct(images, pred, mask)
    assert masked.shape == recon.shape == images.shape
    visible = (mask == 0).unsqueeze(-1)
    assert torch.equal(patchify(recon, 8).masked_select(visible), patchify(images, 8).masked_select(visible))


def test_config_errors():
    with pytest.raises(UserInputError, match="unknown config key 'model.colour'"):
        load_config(PretrainConfig, None, ["model.colour=1"])
    with pytest.raises(UserInputError, match="unknown config key 'model.decoder.width'"):
        load_config(PretrainConfig, None, ["model.decoder={width: 3}"])
    with pytest.raises(UserInputError, match="model.img_size: expected a multiple of the patch size 8, got 36"):
        build_mae(tiny_cfg(img_size=36))
    with pytest.raises(UserInputError, match="unknown timm model"):
        build_mae(tiny_cfg(encoder="vit_nonexistent"))
    with pytest.raises(UserInputError, match="mask_ratio"):
        build_mae(tiny_cfg(mask_ratio=1.0))
    with pytest.raises(UserInputError, match="encoder_args"):
        build_mae(tiny_cfg(encoder_args={**TINY, "num_heads": 5}))
    with pytest.raises(UserInputError, match="model.decoder.dim"):
        build_mae(tiny_cfg(decoder=DecoderConfig(dim=18, depth=1, heads=2)))
    with pytest.raises(ValueError, match="noise"):
        build_mae(tiny_cfg())(torch.randn(2, 2, 32, 32), torch.rand(2, 5))
