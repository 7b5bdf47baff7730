"""Decorrelated backpropagation (DBP), model-agnostic: this package imports nothing else of mae_dbp.

``apply`` puts a learned decorrelation matrix R in front of chosen Linear/Conv2d layers, ``update``
takes one R step after each optimizer step, ``fuse`` folds R into the weights (W <- W R).
Bad arguments raise :class:`DecorError` (a ValueError).

Names are imported on first use (PEP 562), so ``mae_dbp.decor.errors`` / ``settings`` load without
torch (the command line's ``--help`` stays fast).
"""

from __future__ import annotations

import importlib

_HOMES = {
    "mae_dbp.decor.api": ("FORMS", "apply", "decor_modules", "defer_weight_grads", "explicit",
                            "finish_weight_grads", "fuse", "fused_state_dict", "ranks_agree", "update", "use_form"),
    "mae_dbp.decor.cost": ("fused_is_cheaper", "gram_is_cheaper", "rows_update_is_cheaper"),
    "mae_dbp.decor.conv": ("DecorConv2d",),
    "mae_dbp.decor.errors": ("DecorError",),
    "mae_dbp.decor.layers": ("DecorLinear", "DecorMixin"),
    "mae_dbp.decor.matrix": ("correlation_metric",),
    "mae_dbp.decor.settings": ("DEFAULT_LR", "VARIANTS", "DecorSettings"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mae_dbp.decor' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value
