"""Fixed 2-D sine-cosine position embeddings for a grid of patches (as in MAE).

Half of the channels encode the patch row, the other half the patch column; each half is split
into sines and cosines of the coordinate at geometrically spaced frequencies (base 10000).
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine code of 1-D positions: (N,) -> (N, dim), sines first then cosines."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
    """Fixed 2-D position table for a (rows, cols) patch grid.

    Returns float32 (num_prefix + rows*cols, dim): ``num_prefix`` zero rows (cls / register tokens)
    then the patches in row-major order, matching timm's ``PatchEmbed`` flattening.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    rows, cols = grid
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    table = torch.cat([sincos_1d(dim // 2, ys.reshape(-1)), sincos_1d(dim // 2, xs.reshape(-1))], dim=1)
    prefix = torch.zeros(num_prefix, dim, dtype=table.dtype)
    return torch.cat([prefix, table], dim=0).float()
