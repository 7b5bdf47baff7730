"""Frozen encoder features for the probe: all patches, no masking, eval mode, no gradients."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def encoder_features(encoder: nn.Module, images: Tensor, pooled: bool, batch_size: int,
                     device: torch.device) -> Tensor:
    """Features of ``images`` (N, C, H, W), on the CPU in float32: patch tokens (N, h, w, D) after
    the encoder's final norm, or (``pooled``) their mean (N, D).

    Runs ``encoder`` in eval mode and puts its previous mode back; DBP layers draw no subsample
    outside training, so neither the training RNG nor R's statistics move.
    """
    was_training = encoder.training
    encoder.eval()
    grid = tuple(int(g) for g in encoder.patch_embed.grid_size)
    prefix = int(encoder.num_prefix_tokens)
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device, non_blocking=True)
            tokens = encoder.forward_features(batch)[:, prefix:].float()  # (B, h*w, D)
            out.append((tokens.mean(1) if pooled else tokens.reshape(tokens.shape[0], *grid, -1)).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)
