"""Masked autoencoder (MAE) around a plain timm ``VisionTransformer`` encoder.

The encoder is an unmodified timm model (same module names, so its ``state_dict`` loads strictly
into ``timm.create_model(name, num_classes=0, ...)``); only its ``pos_embed`` is overwritten with
a frozen 2-D sin-cos table. The MAE forward calls the encoder's own sub-modules (``patch_embed``,
``blocks``, ``norm``), so DBP wrappers placed on them by name (``mae_dbp.decor.apply``) are used.

Shapes: images (B, C, H, W); L = number of patches; patch vectors have p*p*C values ordered
(row in patch, column in patch, channel).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

import timm
import torch
from timm.models import checkpoint_seq
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from mae_dbp.config import require
from mae_dbp.errors import UserInputError, closest
from mae_dbp.models.pos_embed import sincos_2d


@dataclass
class DecoderConfig:
    """The MAE decoder: ``depth`` transformer blocks of width ``dim`` (the DBP-MAE paper: 2 x 512)."""

    dim: int = 512
    depth: int = 2
    heads: int = 16
    mlp_ratio: float = 4.0


@dataclass
class MAEConfig:
    """The ``model`` section of a pretraining config: a timm ViT encoder and the MAE around it."""

    encoder: str = "vit_base_patch16_224"  # a timm VisionTransformer name
    img_size: int = 224  # px, square; a multiple of the patch size
    in_chans: int = 3
    encoder_args: dict[str, Any] = field(default_factory=dict)  # timm kwargs: embed_dim, depth, num_heads, patch_size
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    # start from these weights (mae_dbp/models/init_from.py): a .safetensors / .pth / .bin file, a folder such
    # as a mae-dbp export (or timm's local-dir:FOLDER), a facebookresearch/mae checkpoint; checked at run time
    init_from: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.in_chans >= 1, "model.in_chans", "an int >= 1", self.in_chans)


def check_encoder_args(name: str, args: dict[str, Any]) -> None:
    """Each key of ``model.encoder_args`` must be an argument of timm's VisionTransformer: an unknown
    one (a typo, or ``{embed_dim:96}`` without a space, which YAML reads as the key ``embed_dim:96``
    with no value and timm would drop) is one line with the closest name."""
    known = [p for p in inspect.signature(VisionTransformer.__init__).parameters if p not in ("self", "img_size", "in_chans", "num_classes")]
    for key in args:
        if key in known:
            continue
        base = str(key).split(":", 1)[0].strip()
        hint = closest(base, known)
        advice = f" (did you mean {hint[0]}?)" if hint else f" (expected one of {', '.join(known[:12])}, ...)"
        if ":" in str(key):
            advice += "; write `key: value` with a space after the colon"
        raise UserInputError(f"model.encoder_args: unknown key {str(key)!r} for timm model {name!r}{advice}")


def build_encoder(name: str, img_size: int, in_chans: int, **overrides: Any) -> VisionTransformer:
    """A randomly initialised timm ViT (no head, no download) with a frozen sin-cos ``pos_embed``."""
    if not timm.is_model(name):
        raise UserInputError(f"unknown timm model name {name!r} (model.encoder)")
    check_encoder_args(name, overrides)
    try:
        encoder = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=img_size, in_chans=in_chans, **overrides
        )
    except (TypeError, AssertionError) as error:
        raise UserInputError(f"bad model.encoder_args for {name!r}: {error}") from error
    if not isinstance(encoder, VisionTransformer):
        raise UserInputError(f"model.encoder {name!r} is a {type(encoder).__name__}, not a timm VisionTransformer")
    set_sincos_pos_embed(encoder)
    return encoder


def set_sincos_pos_embed(encoder: VisionTransformer) -> None:
    """Overwrite ``encoder.pos_embed`` in place with fixed 2-D sin-cos (zero prefix rows), frozen.

    Follows timm's layout: prefix (cls / register) rows exist only when ``no_embed_class`` is False.
    """
    if encoder.pos_embed is None:
        raise UserInputError("MAE needs an encoder with a learnable-layout pos_embed (pos_embed='none' given)")
    if encoder.embed_dim % 4:
        raise UserInputError(f"2-D sin-cos positions need an embed_dim divisible by 4, got {encoder.embed_dim}")
    num_prefix = 0 if encoder.no_embed_class else encoder.num_prefix_tokens
    table = sincos_2d(encoder.embed_dim, tuple(encoder.patch_embed.grid_size), num_prefix)
    with torch.no_grad():
        encoder.pos_embed.copy_(table.unsqueeze(0))
    encoder.pos_embed.requires_grad_(False)


def patchify(images: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p) patches in row-major order."""
    b, c, height, width = images.shape
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
    h, w = height // p, width // p
    x = images.reshape(b, c, h, p, w, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, h * w, p * p * c)


def unpatchify(x: Tensor, p: int, c: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, h*w, p*p*C) -> (B, C, h*p, w*p); h, w count patches."""
    b = x.shape[0]
    x = x.reshape(b, h, w, p, p, c)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, h * p, w * p)


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch standardisation (the ``norm_pix_loss`` target): (x - mean) / sqrt(var + eps).

    Mean and (unbiased, as in MAE) variance over each patch's p*p*C values; shape unchanged.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error per patch, averaged over masked patches only (mask 1 = masked).

    pred, target (B, L, D); mask (B, L). Computed in float32. Returns a scalar.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum()


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per sample: int(L * (1 - ratio)), robust to float round-off."""
    return int(num_patches * (1.0 - mask_ratio) + 1e-6)


def fixed_noise(batch_size: int, num_patches: int, seed: int) -> Tensor:
    """Reproducible masking noise (B, L) in [0, 1) from its own ``torch.Generator`` (for validation)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, num_patches, generator=generator)


def random_masking(x: Tensor, mask_ratio: float, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the patches with the smallest noise, per sample.

    x (B, L, D), noise (B, L) -> visible tokens (B, K, D), mask (B, L) with 1 = masked,
    ids_restore (B, L) that puts [visible, masked] back into the original patch order.
    """
    b, length, dim = x.shape
    keep = num_kept(length, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(b, length, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible, mask, ids_restore


class MaskedAutoencoder(nn.Module):
    """MAE: a timm ViT encoder on the visible patches and a light transformer decoder.

    ``forward(images, noise=None) -> (loss, pred (B, L, p*p*C), mask (B, L), 1 = masked)``.
    """

    def __init__(self, encoder: VisionTransformer, decoder: DecoderConfig, mask_ratio: float,
                 norm_pix_loss: bool) -> None:
        super().__init__()
        decoder_dim, decoder_heads = decoder.dim, decoder.heads
        patch = tuple(encoder.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise UserInputError(f"MAE needs square patches, got {patch}")
        self.encoder = encoder
        self.patch_size: int = int(patch[0])
        self.grid_size: tuple[int, int] = tuple(int(g) for g in encoder.patch_embed.grid_size)
        self.num_patches: int = self.grid_size[0] * self.grid_size[1]
        self.in_chans: int = int(encoder.patch_embed.proj.in_channels)
        self.img_size: int = self.grid_size[0] * self.patch_size  # px, square: what the data must deliver
        self.num_prefix: int = int(encoder.num_prefix_tokens)
        keep = num_kept(self.num_patches, mask_ratio)
        if not 0.0 < mask_ratio < 1.0 or keep < 1 or keep >= self.num_patches:
            raise UserInputError(
                f"model.mask_ratio {mask_ratio} must leave at least one visible and one masked patch "
                f"out of {self.num_patches}"
            )
        if decoder_dim % 4 or decoder_dim % decoder_heads:
            raise UserInputError(f"model.decoder.dim {decoder_dim} must be divisible by 4 and by heads {decoder_heads}")
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)

        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        table = sincos_2d(decoder_dim, self.grid_size, self.num_prefix)
        self.register_buffer("decoder_pos_embed", table.unsqueeze(0))
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(decoder_dim, decoder_heads, mlp_ratio=decoder.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(decoder.depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * self.in_chans)
        self._init_decoder()

    def _init_decoder(self) -> None:
        """MAE init for the decoder: xavier-uniform Linear, unit LayerNorm, N(0, 0.02) mask token."""
        nn.init.normal_(self.mask_token, std=0.02)
        for name, module in self.named_modules():
            if not name.startswith("decoder"):
                continue
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (of this module) that should get no weight decay besides norms/biases."""
        names = {"mask_token", "encoder.pos_embed", "encoder.cls_token", "encoder.reg_token"}
        own = {name for name, _ in self.named_parameters()}
        return names & own

    def forward_encoder(self, images: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches: -> latent (B, prefix + K, D), mask (B, L), ids_restore (B, L)."""
        enc = self.encoder
        x = enc.patch_embed(images)
        if x.dim() == 4:  # dynamic_img_size keeps (B, h, w, D)
            x = x.flatten(1, 2)
        pos = enc.pos_embed
        x = x + pos[:, pos.shape[1] - x.shape[1] :]
        x, mask, ids_restore = random_masking(x, self.mask_ratio, noise)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (enc.cls_token, enc.reg_token) if t is not None]
        if prefix:
            tokens = torch.cat(prefix, dim=1)
            if not enc.no_embed_class:
                tokens = tokens + pos[:, : self.num_prefix]
            x = torch.cat([tokens, x], dim=1)
        x = enc.norm_pre(enc.pos_drop(x))
        if enc.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(enc.blocks, x)
        else:
            x = enc.blocks(x)
        return enc.norm(x), mask, ids_restore

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Decode all patches: latent (B, prefix + K, D) -> pred (B, L, p*p*C)."""
        x = self.decoder_embed(latent)
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix :]
        b, length = ids_restore.shape
        fill = self.mask_token.to(x.dtype).expand(b, length - visible.shape[1], -1)
        x = torch.cat([visible, fill], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, x], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x)[:, self.num_prefix :]

    def target(self, images: Tensor) -> Tensor:
        """Reconstruction target (B, L, p*p*C): the patches, standardised per patch if norm_pix_loss."""
        patches = patchify(images, self.patch_size)
        return normalize_patches(patches) if self.norm_pix_loss else patches

    def forward(self, images: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """images (B, C, H, W); noise (B, L) or None for fresh uniform noise -> (loss, pred, mask)."""
        b = images.shape[0]
        if noise is None:
            noise = torch.rand(b, self.num_patches, device=images.device)
        elif noise.shape != (b, self.num_patches):
            raise ValueError(f"noise must have shape {(b, self.num_patches)}, got {tuple(noise.shape)}")
        latent, mask, ids_restore = self.forward_encoder(images, noise.to(images.device))
        pred = self.forward_decoder(latent, ids_restore)
        return masked_loss(pred, self.target(images), mask), pred, mask

    def unpatchify(self, patches: Tensor) -> Tensor:
        """(B, L, p*p*C) -> (B, C, H, W) for this model's patch size and grid."""
        return unpatchify(patches, self.patch_size, self.in_chans, *self.grid_size)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, pred: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """For plots: (masked input, reconstruction), both (B, C, H, W) in the images' units.

        With norm_pix_loss the prediction is mapped back with each patch's true mean/std. The
        reconstruction shows predicted patches where masked and the input where visible.
        """
        patches = patchify(images, self.patch_size).float()
        pred = pred.float()
        if self.norm_pix_loss:
            pred = pred * (patches.var(dim=-1, keepdim=True) + 1e-6).sqrt() + patches.mean(dim=-1, keepdim=True)
        m = mask.float().unsqueeze(-1)
        masked_input = self.unpatchify(patches * (1 - m))
        return masked_input, self.unpatchify(patches * (1 - m) + pred * m)


def _check_img_size(encoder: VisionTransformer, img_size: int) -> None:
    patch = int(encoder.patch_embed.patch_size[0])
    if img_size % patch:
        raise UserInputError(f"model.img_size: expected a multiple of the patch size {patch}, got {img_size}")


def build_mae(cfg: MAEConfig) -> MaskedAutoencoder:
    """The MAE of a config's ``model`` section (a randomly initialised timm encoder, no DBP)."""
    encoder = build_encoder(cfg.encoder, img_size=cfg.img_size, in_chans=cfg.in_chans, **dict(cfg.encoder_args))
    _check_img_size(encoder, cfg.img_size)
    return MaskedAutoencoder(encoder, cfg.decoder, mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss)
