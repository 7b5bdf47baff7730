"""``bench decor``: one ViT-B MAE batch through a decorrelated layer vs the plain layer.

A step is forward + backward (+ the R update for DBP). Shapes follow ViT-B/16 MAE with batch 256:
qkv ``Linear(768, 2304)`` on 256 x 49 visible tokens, and the patch-embed ``Conv2d(3, 768, 16,
stride 16)`` on 128 images of 224 x 224.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.bench.timing import time_alternating


def _step(model: nn.Module, x: torch.Tensor, with_update: bool):
    def run() -> None:
        out = model(x)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        if with_update:
            decor.update(model)

    return run


def compare(layer: nn.Module, x: torch.Tensor, repeats: int, **settings) -> dict[str, float]:
    """Time the plain layer and its DBP version on input x; returns seconds and their ratio."""
    plain = nn.Sequential(layer).train()
    wrapped = nn.Sequential(copy.deepcopy(layer)).train()
    decor.apply(wrapped, ["0"], **settings)
    times = time_alternating(
        {"plain": _step(plain, x, False), "dbp": _step(wrapped, x, True)}, repeats=repeats
    )
    return {"plain_s": times["plain"], "dbp_s": times["dbp"], "ratio": times["dbp"] / times["plain"]}


def run_decor_bench(repeats: int = 5, tokens: int = 12544, images: int = 128, sample_frac: float = 0.1) -> dict:
    """The issue's layer benchmark; returns {"linear_ratio", "conv_ratio", and the raw timings}."""
    torch.manual_seed(0)
    tokens_x = torch.randn(tokens, 768, requires_grad=True)
    linear = compare(nn.Linear(768, 2304), tokens_x, repeats, sample_frac=sample_frac)
    images_x = torch.randn(images, 3, 224, 224)
    conv = compare(nn.Conv2d(3, 768, 16, stride=16), images_x, repeats, sample_frac=sample_frac)
    return {
        "linear_ratio": linear["ratio"],
        "conv_ratio": conv["ratio"],
        "linear": linear,
        "conv": conv,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
