"""Decorrelated backpropagation (DBP), model-agnostic.

``apply`` puts a learned decorrelation matrix R in front of chosen Linear/Conv2d layers, ``update``
takes one R step after each optimizer step, ``fuse`` folds R into the weights (W <- W R).
"""

from mae_dbp.decor.apply import (
    FORMS, apply, decor_modules, defer_weight_grads, explicit, finish_weight_grads, fuse, ranks_agree, update, use_form,
)
from mae_dbp.decor.cost import fused_is_cheaper, gram_is_cheaper, rows_update_is_cheaper
from mae_dbp.decor.conv import DecorConv2d
from mae_dbp.decor.layers import DecorLinear, DecorMixin
from mae_dbp.decor.matrix import VARIANTS, DecorSettings, correlation_metric

__all__ = [
    "apply", "update", "fuse", "explicit", "use_form", "FORMS", "decor_modules", "ranks_agree",
    "defer_weight_grads", "finish_weight_grads",
    "fused_is_cheaper", "gram_is_cheaper", "rows_update_is_cheaper", "DecorLinear", "DecorConv2d", "DecorMixin",
    "DecorSettings", "VARIANTS", "correlation_metric",
]
