"""Decorrelated backpropagation (DBP), model-agnostic.

``apply`` puts a learned decorrelation matrix R in front of chosen Linear/Conv2d layers, ``update``
takes one R step after each optimizer step, ``fuse`` folds R into the weights (W <- W R).
"""

from mae_dbp.decor.apply import apply, decor_modules, explicit, fuse, ranks_agree, update
from mae_dbp.decor.layers import DecorConv2d, DecorLinear, DecorMixin
from mae_dbp.decor.matrix import VARIANTS, DecorSettings, correlation_metric

__all__ = [
    "apply", "update", "fuse", "explicit", "decor_modules", "ranks_agree", "DecorLinear", "DecorConv2d", "DecorMixin",
    "DecorSettings", "VARIANTS", "correlation_metric",
]
