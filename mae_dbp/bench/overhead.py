"""``bench overhead``: our MAE in BP mode vs a plain MAE written the straightforward way with timm
blocks (no framework), same sizes, same optimizer: the framework's cost per training step."""

from __future__ import annotations

import copy

import timm
import torch
from timm.models.vision_transformer import Block
from torch import nn

from mae_dbp.bench.pretrain_step import training_step
from mae_dbp.bench.timing import count_flops, time_alternating
from mae_dbp.train.pretrain import PretrainConfig, build_model


class StraightforwardMAE(nn.Module):
    """A minimal MAE with timm blocks: the reference the framework's overhead is measured against."""

    def __init__(self, encoder: nn.Module, decoder_dim: int, decoder_depth: int, decoder_heads: int, mask_ratio: float):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        p = encoder.patch_embed.patch_size[0]
        self.p, self.c = p, encoder.patch_embed.proj.in_channels
        n = encoder.patch_embed.num_patches
        self.embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos = nn.Parameter(torch.zeros(1, n + 1, decoder_dim), requires_grad=False)
        self.blocks = nn.Sequential(*[Block(decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)])
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, p * p * self.c)

    def forward(self, images: torch.Tensor):
        e = self.encoder
        x = e.patch_embed(images) + e.pos_embed[:, 1:]
        b, n, d = x.shape
        keep = int(n * (1 - self.mask_ratio))
        ids_shuffle = torch.rand(b, n, device=x.device).argsort(1)
        ids_restore = ids_shuffle.argsort(1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        cls = (e.cls_token + e.pos_embed[:, :1]).expand(b, -1, -1)
        x = e.norm(e.blocks(torch.cat([cls, x], 1)))
        x = self.embed(x)
        y = torch.cat([x[:, 1:], self.mask_token.expand(b, n - keep, -1)], 1)
        y = torch.gather(y, 1, ids_restore[..., None].expand(-1, -1, y.shape[-1]))
        y = self.pred(self.norm(self.blocks(torch.cat([x[:, :1], y], 1) + self.pos)))[:, 1:]
        h = images.shape[-1] // self.p
        target = images.reshape(b, self.c, h, self.p, h, self.p).permute(0, 2, 4, 3, 5, 1).reshape(b, n, -1)
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        loss = (((y - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        return loss, y, mask


def run_overhead_bench(config: PretrainConfig, steps: int, batch_size: int | None = None) -> dict:
    """Our MAE in BP mode vs the straightforward MAE: training-step time ratio."""
    config = copy.deepcopy(config)
    config.decor.enabled = False
    model = config.model
    batch = batch_size or config.train.batch_size
    torch.manual_seed(0)
    ours, _ = build_model(config)
    torch.manual_seed(0)
    encoder = timm.create_model(model.encoder, pretrained=False, num_classes=0, img_size=ours.img_size,
                                in_chans=ours.in_chans, **dict(model.encoder_args))
    encoder.pos_embed.requires_grad_(False)
    dec = model.decoder
    plain = StraightforwardMAE(encoder, dec.dim, dec.depth, dec.heads, model.mask_ratio)
    images = torch.randn(batch, ours.in_chans, ours.img_size, ours.img_size)
    calls = {"plain": training_step(plain, images), "ours": training_step(ours, images)}
    times = time_alternating(calls, repeats=steps, warmup=2)
    return {"plain_mae_step_s": times["plain"], "mae_dbp_bp_step_s": times["ours"],
            "framework_ratio": times["ours"] / times["plain"], "flops": count_flops(calls), "batch_size": batch}
