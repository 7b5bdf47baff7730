"""``WeightedCrossEntropyLoss``: class-weighted cross-entropy that skips ignored pixels.

mmseg 1.2.2's ``CrossEntropyLoss(class_weight=...)`` raises ``IndexError`` as soon as a label holds
the ignore index (255): it builds its mean's denominator as ``class_weight[label]`` before masking
ignored pixels, whatever ``avg_non_ignore`` is. This loss is PyTorch's weighted mean instead:
``sum_i w[y_i] * ce_i / sum_i w[y_i]`` over the pixels with ``y_i != ignore_index``, as
``torch.nn.functional.cross_entropy(weight=w, ignore_index=...)``; a batch with every pixel ignored
gives 0 (not NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class WeightedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with per-class weights and an ignore index, for decode heads.

    Args:
        class_weight: one weight per class (length ``C``); None weighs all classes 1.
        loss_weight: factor on the whole loss (the auxiliary head uses 0.4).
        loss_name: key in the losses dict; must start with ``loss_`` to be back-propagated.
    """

    def __init__(self, class_weight: list[float] | None = None, loss_weight: float = 1.0,
                 loss_name: str = "loss_ce"):
        super().__init__()
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None,
                ignore_index: int = 255, **kwargs) -> torch.Tensor:
        """Scalar loss of logits ``(N, C, H, W)`` against labels ``(N, H, W)`` (int64).

        ``weight`` ``(N, H, W)``: optional per-pixel weights (mmseg's pixel samplers), applied on top.
        """
        num_classes = cls_score.shape[1]
        class_weight = (cls_score.new_ones(num_classes) if self.class_weight is None
                        else cls_score.new_tensor(self.class_weight))
        valid = label != ignore_index
        per_pixel = F.cross_entropy(cls_score, label, weight=class_weight, ignore_index=ignore_index,
                                    reduction="none")  # already w[y_i] * ce_i, 0 where ignored
        pixel_weight = torch.where(valid, class_weight[label.clamp(0, num_classes - 1)], 0.0)
        if weight is not None:
            per_pixel = per_pixel * weight
            pixel_weight = pixel_weight * weight
        return self.loss_weight * per_pixel.sum() / pixel_weight.sum().clamp_min(torch.finfo(cls_score.dtype).tiny)

    @property
    def loss_name(self) -> str:
        """Key of this loss in the head's losses dict (mmseg's loss interface)."""
        return self._loss_name
