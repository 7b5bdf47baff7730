"""Train and test a segmentation config with the :class:`~segmentation.seg_runner.SegRunner`, in-process.

Both return the metrics record written to ``<work_dir>/metrics.json`` (see
:mod:`segmentation.hooks`): ``{"mode", "iter", "mIoU", "mAcc", "aAcc", "per_class_iou": {...}}``
in percent. The metrics-JSON and preview hooks are added when a config does not list them::

    from segmentation.runner import train, test
    record = train("configs/segmentation/upernet_tiny_cpu.py", "work_dirs/seg",
                   {"data_root": "data/seg", "pretrained_export": "exports/dbp", "train_cfg.max_iters": 40})
    record = test("configs/segmentation/upernet_tiny_cpu.py", "work_dirs/seg/iter_40.pth")

``cfg_options`` are merged as mmengine does (``a.b.c=value``); a key that names nothing in the
config is an error. ``test`` uses the resolved config the training run dumped beside the checkpoint.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from mae_dbp.config import resolve_config_path
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import refuse_existing
from segmentation.cfg_options import check_keys
from segmentation.hooks import METRICS_FILE

_OUR_HOOKS = ("SegMetricsJsonHook", "SegPreviewHook")
_RUN_MARKERS = ("last_checkpoint", METRICS_FILE)


def load_config(config: str | Path, cfg_options: dict[str, Any] | None = None):
    """``mmengine.Config.fromfile(config)`` with ``cfg_options`` merged; unknown keys are errors.
    ``configs/segmentation/...`` falls back to the shipped copy, as pretraining configs do."""
    from mmengine.config import Config

    path = resolve_config_path(config)
    if not path.is_file():
        raise UserInputError(f"{path}: config file does not exist")
    cfg = Config.fromfile(str(path))
    options = dict(cfg_options or {})
    check_keys(cfg, options, str(path))
    cfg.merge_from_dict(options)
    return cfg


def _prepare(config: str | Path, work_dir: str | Path | None, cfg_options: dict[str, Any] | None,
             show_dir: str | Path | None = None, checkpoint: str | Path | None = None, launcher: str = "none"):
    import segmentation.plugin  # noqa: F401  (compat + registration before the config is built)

    cfg = load_config(config, cfg_options)
    # mmengine keeps loggers / visualizers per experiment name (config name + time to the second,
    # the time it appends itself): a random part keeps two runs in one process (quickstart) apart.
    cfg.experiment_name = f"{Path(config).stem}_{uuid.uuid4().hex[:6]}"
    cfg.launcher = launcher
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


def _build(cfg):
    """The config's ``runner_type`` (our configs: ``SegRunner``), else mmengine's Runner."""
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS

    return RUNNERS.build(cfg) if cfg.get("runner_type") else Runner.from_cfg(cfg)


def _record(work_dir: str | Path) -> dict[str, Any]:
    path = Path(work_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run_files(work_dir: str | Path) -> list[Path]:
    """What makes ``work_dir`` hold a training run: its checkpoints (``*.pth``, last_checkpoint) and metrics."""
    folder = Path(work_dir)
    return [folder / m for m in _RUN_MARKERS] + sorted(folder.glob("*.pth"))


def train(config: str | Path, work_dir: str | Path | None = None, cfg_options: dict[str, Any] | None = None,
          resume: bool = False, force: bool = False, launcher: str = "none") -> dict[str, Any]:
    """Fine-tune with ``config``; ``resume`` continues from the last checkpoint in ``work_dir``.

    A work dir that already holds a run is refused unless ``resume`` or ``force`` (its checkpoints
    and metrics are removed first: :func:`mae_dbp.run_dir.refuse_existing`). Returns the last
    validation record.
    """
    cfg = _prepare(config, work_dir, cfg_options, launcher=launcher)
    if resume:
        if not (Path(cfg.work_dir) / "last_checkpoint").is_file():
            raise UserInputError(f"--resume: no checkpoint to resume in {cfg.work_dir} (no last_checkpoint file)")
        cfg.resume = True
        cfg.load_from = None
    else:
        refuse_existing(cfg.work_dir, run_files(cfg.work_dir), force, resumable=True)
    _build(cfg).train()
    return _record(cfg.work_dir)


def run_config(checkpoint: Path, config: str | Path) -> Path:
    """The resolved config the training run dumped beside ``checkpoint`` (same file name), else ``config``."""
    dumped = checkpoint.parent / Path(config).name
    return dumped if dumped.is_file() and dumped.resolve() != Path(config).resolve() else Path(config)


def test(config: str | Path, checkpoint: str | Path, work_dir: str | Path | None = None,
         show_dir: str | Path | None = None, cfg_options: dict[str, Any] | None = None,
         launcher: str = "none") -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test split of the config its training run used.

    The training run's dumped config (``<checkpoint folder>/<config file name>``, with every
    ``--cfg-options`` and resolved size of that run) is used when present, so no option needs
    repeating. ``work_dir`` defaults to ``<checkpoint folder>/test_<checkpoint stem>``.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserInputError(f"{checkpoint}: checkpoint does not exist")
    source = run_config(checkpoint, config)
    if source != Path(config):
        print(f"using the training run's config {source}")
    work_dir = work_dir if work_dir is not None else checkpoint.parent / f"test_{checkpoint.stem}"
    cfg = _prepare(source, work_dir, cfg_options, show_dir, checkpoint, launcher=launcher)
    cfg.load_from = str(checkpoint)
    cfg.resume = False
    _build(cfg).test()
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
