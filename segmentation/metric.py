"""``PerClassIoUMetric``: mmseg's IoUMetric that also returns the IoU of every class.

mmseg's ``IoUMetric`` logs a per-class table but returns only aAcc/mIoU/mAcc. This subclass adds
``IoU.<class name>`` entries (percent, NaN when a class is absent from both prediction and ground
truth, like mmseg) so they reach hooks, logs and ``metrics.json``.
"""

from __future__ import annotations

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

PER_CLASS_PREFIX = "IoU."


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """IoUMetric + ``IoU.<class>`` (percent, 2 decimals) for every class of ``dataset_meta``."""

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        if self.format_only or not results:
            return metrics
        intersect, union = (sum(column) for column in list(zip(*results))[:2])
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = (intersect / union).cpu().numpy() if hasattr(intersect, "cpu") else intersect / union
        for name, value in zip(self.dataset_meta["classes"], iou):
            metrics[f"{PER_CLASS_PREFIX}{name}"] = float(np.round(value * 100, 2))
        return metrics
