"""mmengine hooks: write evaluation metrics to ``metrics.json`` and save prediction previews.

``SegMetricsJsonHook`` rewrites ``<work_dir>/metrics.json`` after every validation and test run::

    {"mode": "val", "iter": 40, "mIoU": 41.3, "mAcc": ..., "aAcc": ...,
     "per_class_iou": {"background": 95.1, "wire": null, ...}}

(percent; null for a class absent from both prediction and ground truth). ``SegPreviewHook``
saves ``[input | ground truth | prediction]`` PNGs of the first ``num_images`` samples of each
validation / test run to ``out_dir`` (default ``<work_dir>/vis``), overwriting earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mae_dbp.files import write_json
from segmentation.metric import PER_CLASS_PREFIX
from segmentation.preview import save_preview

METRICS_FILE = "metrics.json"


def metrics_record(metrics: dict[str, float], mode: str, iteration: int, checkpoint: str | None = None) -> dict:
    """The JSON record for an evaluation: summary values at top level, per-class IoU grouped.

    ``iteration`` is the training iteration (validation); a test records its ``checkpoint`` instead.
    """
    record: dict = {"mode": mode, "checkpoint": checkpoint} if checkpoint else {"mode": mode, "iter": iteration}
    per_class = {}
    for key, value in metrics.items():
        if key.startswith(PER_CLASS_PREFIX):
            per_class[key[len(PER_CLASS_PREFIX):]] = float(value)
        else:
            record[key] = float(value)
    record["per_class_iou"] = per_class
    return record


@HOOKS.register_module()
class SegMetricsJsonHook(Hook):
    """Write the latest validation / test metrics to ``<work_dir>/<file_name>`` (atomically).

    ``checkpoint`` (set by ``segmentation.runner.test``) is recorded with test metrics.
    """

    priority = "VERY_LOW"

    def __init__(self, file_name: str = METRICS_FILE, checkpoint: str | None = None) -> None:
        self.file_name = file_name
        self.checkpoint = checkpoint

    def _write(self, runner, metrics: dict[str, float] | None, mode: str) -> None:
        if not metrics or runner.rank != 0:
            return
        record = metrics_record(metrics, mode, runner.iter, self.checkpoint if mode == "test" else None)
        write_json(Path(runner.work_dir) / self.file_name, record)

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self._write(runner, metrics, "val")

    def after_test_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        self._write(runner, metrics, "test")


@HOOKS.register_module()
class SegPreviewHook(Hook):
    """Save previews of the first ``num_images`` predictions of each validation / test run."""

    priority = "LOW"

    def __init__(self, num_images: int = 4, out_dir: str | None = None) -> None:
        self.num_images = int(num_images)
        self.out_dir = out_dir
        self._count = 0

    def _reset(self, runner) -> None:
        self._count = 0

    before_val_epoch = _reset
    before_test_epoch = _reset

    def _draw(self, runner, outputs: Sequence, loop) -> None:
        if runner.rank != 0 or self._count >= self.num_images:
            return
        meta = loop.dataloader.dataset.metainfo
        ignore_index = getattr(loop.dataloader.dataset, "ignore_index", 255)
        out_dir = Path(self.out_dir or Path(runner.work_dir) / "vis")
        for sample in outputs[: self.num_images - self._count]:
            prediction = sample.pred_sem_seg.data[0].cpu().numpy()
            gt = sample.gt_sem_seg.data[0].cpu().numpy() if "gt_sem_seg" in sample else None
            stem = Path(sample.img_path).stem
            save_preview(sample.img_path, prediction, meta["palette"], out_dir / f"{stem}.png", gt, ignore_index,
                         class_names=meta.get("classes"))
            self._count += 1

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._draw(runner, outputs or [], runner.val_loop)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._draw(runner, outputs or [], runner.test_loop)
