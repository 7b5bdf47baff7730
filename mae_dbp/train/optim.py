"""AdamW as the trainers and benches build it: torch's fused kernel where torch has one for the device.

The fused kernel (``fused=True``: CUDA, CPU and a few others in torch >= 2.4) updates every
parameter in one kernel per dtype and keeps its step counters as tensors on the device, so an
optimizer step reads nothing back to the host (the for-loop implementation calls ``.item()`` on
each parameter's step counter). Elsewhere torch's default implementation is used.
"""

from __future__ import annotations

from typing import Iterable

import torch


def fused_available(device: torch.device | str) -> bool:
    """Whether torch has a fused AdamW kernel for ``device``'s type."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return torch.device(device).type in _get_fused_kernels_supported_devices()


def adamw(params: Iterable, lr: float, betas: tuple[float, float], device: torch.device | str,
          weight_decay: float = 0.01) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (tensors or param groups) living on ``device``, fused where available."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                             fused=True if fused_available(device) else None)
