"""The probe's scores, in percent: mean IoU over classes present, and accuracy."""

from __future__ import annotations

import torch
from torch import Tensor


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> float:
    """Mean IoU (%) over the classes that occur in ``target`` or ``pred``; pixels at ``ignore_index``
    do not count. pred, target: integer tensors of one shape."""
    valid = target != ignore_index
    pred, target = pred[valid].long(), target[valid].long()
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = confusion.diagonal().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - inter
    present = union > 0
    return float((inter[present] / union[present]).mean() * 100) if present.any() else 0.0


def accuracy(pred: Tensor, target: Tensor) -> float:
    """Share (%) of ``pred`` equal to ``target``."""
    return float((pred == target).double().mean() * 100)
