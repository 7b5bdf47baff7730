"""``bench inference``: the exported (fused) encoder vs a plain timm ViT of the same size built
directly by timm: time ratio, and the fused model's max abs difference from the unfused DBP encoder
computed step by step as W (R x)."""

from __future__ import annotations

import copy

import timm
import torch

from mae_dbp import decor
from mae_dbp.bench.device import autocast, device_record, resolve_device
from mae_dbp.bench.timing import count_flops, time_alternating
from mae_dbp.train.pretrain import PretrainConfig, build_model


def run_inference_bench(config: PretrainConfig, repeats: int, batch_size: int = 32, device: str = "auto",
                        dtype: str = "float32", compile: bool = False) -> dict:
    """Fused exported encoder vs the plain timm ViT: time ratio and max abs diff to the unfused model
    (float32, computed before timing); timed on ``device`` under ``dtype`` autocast, both models
    ``torch.compile``'d with ``compile``."""
    where = resolve_device(device)
    config = copy.deepcopy(config)
    config.decor.enabled = True
    torch.manual_seed(0)
    mae, _ = build_model(config)
    encoder = mae.encoder.eval()
    with torch.no_grad():  # a non-trivial R, as after training
        for _, layer in decor.decor_modules(encoder):
            layer.R.add_(0.02 * torch.randn_like(layer.R))
    fused = decor.fuse(copy.deepcopy(encoder)).eval()
    plain = timm.create_model(config.model.encoder, pretrained=False, num_classes=0, img_size=mae.img_size,
                              in_chans=mae.in_chans, **dict(config.model.encoder_args)).eval()
    plain.load_state_dict(fused.state_dict(), strict=True)
    encoder, fused, plain = encoder.to(where), fused.to(where), plain.to(where)
    images = torch.randn(batch_size, mae.in_chans, mae.img_size, mae.img_size, device=where)
    with torch.no_grad():
        with decor.explicit(encoder):
            reference = encoder.forward_features(images)
        diff = float((fused.forward_features(images) - reference).abs().max())
        run_plain, run_fused = (torch.compile(plain), torch.compile(fused)) if compile else (plain, fused)

        def timed(model):
            def call() -> None:
                with autocast(where, dtype):
                    model(images)
            return call

        calls = {"plain": timed(run_plain), "fused": timed(run_fused)}
        times = time_alternating(calls, repeats=repeats, warmup=3 if compile else 1, device=where)
        flops = count_flops({"plain": timed(plain), "fused": timed(fused)})
    return {"plain_s": times["plain"], "fused_s": times["fused"], "ratio": times["fused"] / times["plain"],
            "flops": flops, "max_abs_diff_vs_unfused": diff, "batch_size": batch_size, **device_record(where, dtype, compile)}
