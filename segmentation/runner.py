"""Train and test a segmentation config with mmengine's Runner, in-process.

Both return the metrics record written to ``<work_dir>/metrics.json`` (see
:mod:`segmentation.hooks`): ``{"mode", "iter", "mIoU", "mAcc", "aAcc", "per_class_iou": {...}}``
in percent. The metrics-JSON and preview hooks are added when a config does not list them, so any
mmseg config gets them::

    from segmentation.runner import train, test
    record = train("configs/segmentation/upernet_tiny_cpu.py", "work_dirs/seg",
                   {"data_root": "data/wirebond", "pretrained_export": "runs/dbp/export", "max_iters": 40})
    record = test("configs/segmentation/upernet_tiny_cpu.py", "work_dirs/seg/iter_40.pth")
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from mae_dbp.errors import UserInputError
from segmentation.config_loader import load_config
from segmentation.hooks import METRICS_FILE

_OUR_HOOKS = ("SegMetricsJsonHook", "SegPreviewHook")


def _prepare(config: str | Path, work_dir: str | Path | None, cfg_options: dict[str, Any] | None,
             show_dir: str | Path | None = None, checkpoint: str | Path | None = None):
    import segmentation.plugin  # noqa: F401  (compat + registration before the config is built)

    cfg = load_config(config, cfg_options)
    # mmengine keeps loggers / visualizers per experiment name (config name + time to the second,
    # the time it appends itself): a random part keeps two runs in one process (quickstart) apart.
    cfg.experiment_name = f"{Path(config).stem}_{uuid.uuid4().hex[:6]}"
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(Path("work_dirs") / Path(config).stem)
    hooks = [dict(h) for h in cfg.get("custom_hooks", []) or []]
    present = {h.get("type") for h in hooks}
    hooks += [dict(type=name) for name in _OUR_HOOKS if name not in present]
    for hook in hooks:
        if hook.get("type") == "SegPreviewHook" and show_dir is not None:
            hook["out_dir"] = str(show_dir)
        if hook.get("type") == "SegMetricsJsonHook" and checkpoint is not None:
            hook["checkpoint"] = str(checkpoint)
    cfg.custom_hooks = hooks
    return cfg


def _record(work_dir: str | Path) -> dict[str, Any]:
    path = Path(work_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def train(config: str | Path, work_dir: str | Path | None = None, cfg_options: dict[str, Any] | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Fine-tune with ``config``; ``resume`` continues from the last checkpoint in ``work_dir``.

    Returns the last validation record (empty if the run never validated).
    """
    from mmengine.runner import Runner

    cfg = _prepare(config, work_dir, cfg_options)
    if resume:
        if not (Path(cfg.work_dir) / "last_checkpoint").is_file():
            raise UserInputError(f"--resume: no checkpoint to resume in {cfg.work_dir} (no last_checkpoint file)")
        cfg.resume = True
        cfg.load_from = None
    Runner.from_cfg(cfg).train()
    return _record(cfg.work_dir)


def test(config: str | Path, checkpoint: str | Path, work_dir: str | Path | None = None,
         show_dir: str | Path | None = None, cfg_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's test split; previews go to ``show_dir``.

    ``work_dir`` defaults to ``<checkpoint folder>/test_<checkpoint stem>``.
    """
    from mmengine.runner import Runner

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserInputError(f"{checkpoint}: checkpoint does not exist")
    work_dir = work_dir if work_dir is not None else checkpoint.parent / f"test_{checkpoint.stem}"
    cfg = _prepare(config, work_dir, cfg_options, show_dir, checkpoint)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    Runner.from_cfg(cfg).test()
    return _record(cfg.work_dir)


def format_metrics(record: dict[str, Any]) -> str:
    """A small text table: mIoU / mAcc / aAcc, then the IoU of each class (percent)."""
    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:6.2f}"

    where = f"checkpoint {record['checkpoint']}" if record.get("checkpoint") else f"iteration {record.get('iter', '?')}"
    lines = [f"{record.get('mode', '?')} metrics at {where}"]
    lines += [f"  {key:<12} {show(record[key])}" for key in ("mIoU", "mAcc", "aAcc") if key in record]
    per_class = record.get("per_class_iou") or {}
    if per_class:
        width = max(len(name) for name in per_class)
        lines.append(f"  {'class':<{width}}  IoU")
        lines += [f"  {name:<{width}}  {show(value)}" for name, value in per_class.items()]
    return "\n".join(lines)
