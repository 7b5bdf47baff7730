"""Supervised classification of the DBP zoo (BP or DBP) on an image folder with class sub-folders.

``classify()`` takes a :class:`ClassifyConfig` and builds the datasets, the zoo model
(:mod:`mae_dbp.models.zoo`) and runs the shared loop :func:`mae_dbp.train.loop.fit`, which writes
the run directory. This module adds cross-entropy training, validation top-1 / top-5 accuracy
(fractions in [0, 1], columns ``val_top1`` / ``val_top5`` of metrics.csv), the summary's best
accuracy and training seconds to ``train.target_accuracy``, and two plots (accuracy vs time, a
confusion matrix). ``mae-dbp export RUN_DIR`` (:func:`mae_dbp.export.export_classifier`) fuses R into the weights of a
finished run and writes a plain model (safetensors + config.json).

The loop keeps ``best/`` at the lowest validation loss (not the highest accuracy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from mae_dbp.config import DataConfig, DecorConfig, GuardConfig, LogConfig, TrainConfig, require
from mae_dbp.data.dataset import ImageFolderDataset, train_val_datasets
from mae_dbp.errors import UserInputError
from mae_dbp.files import write_json
from mae_dbp.models.zoo import ZooModelConfig, build_classifier, input_size
from mae_dbp.run_dir import RunDir
from mae_dbp.train import plots
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.loop import Task, fit
from mae_dbp.process import process_state
from mae_dbp.train.job import job_config, open_run


@dataclass
class ClassifyDataConfig(DataConfig):
    val_fraction: float = 0.1
    augment: bool = False  # random resized crop + flip for training (otherwise resize + centre crop)
    cache: bool = False  # decode and transform every image once, keep them in memory (needs augment: false)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not (self.cache and self.augment), "data.cache", "false with data.augment: true (cached images would "
                "repeat one random crop)", self.cache)


@dataclass
class ClassifyTrainConfig(TrainConfig):
    # AdamW with weight_decay 0 is Adam (the DBP paper's optimizer); the paper's constant lr needs
    # train.min_lr = the peak lr (base_lr x effective_batch / 256), as configs/zoo/*.yaml set it
    base_lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = 0.0
    target_accuracy: Optional[float] = None  # summary: training seconds until val top-1 reaches it
    label_smoothing: float = 0.0
    # validation loss rises with overfitting while accuracy still climbs: only a doubling counts as bad
    guard: GuardConfig = field(default_factory=lambda: GuardConfig(tolerance=1.0))


@dataclass
class ClassifyConfig:
    """Everything a classification run reads (``mae-dbp classify --config FILE key=value ...``)."""

    model: ZooModelConfig = field(default_factory=ZooModelConfig)
    decor: DecorConfig = field(default_factory=lambda: DecorConfig(sites=["*"], lr=1e-3))
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    train: ClassifyTrainConfig = field(default_factory=ClassifyTrainConfig)
    log: LogConfig = field(default_factory=LogConfig)


def cached(dataset: Dataset) -> TensorDataset:
    """The (image, label) pairs of ``dataset`` decoded and transformed once, held in memory (N, C, H, W)
    float32; only exact for deterministic transforms (``data.augment: false``)."""
    images, labels = zip(*DataLoader(dataset, batch_size=256, shuffle=False))
    return TensorDataset(torch.cat(images), torch.cat(labels))


def _align_classes(train: ImageFolderDataset, val: ImageFolderDataset) -> None:
    """Give ``val`` the training set's class indices (by class name); every val class must be known."""
    if not train.classes:
        raise UserInputError(f"{train.root}: classification needs class sub-folders (root/<class>/<image>)")
    if val.classes == train.classes:
        return
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown or not val.classes:
        raise UserInputError(f"validation classes {unknown or '(no class sub-folders)'} are not training classes")
    index = {name: i for i, name in enumerate(train.classes)}
    val.samples = [(path, index[val.classes[label]]) for path, label in val.samples]
    val.classes = list(train.classes)


class ClassifyTask(Task):
    """Cross-entropy training; validation loss, top-1 and top-5 accuracy (fractions)."""

    def __init__(self, model: nn.Module, classes: list[str], config: ClassifyConfig) -> None:
        self.model = model
        self.classes = classes
        self.label_smoothing = config.train.label_smoothing
        self.target = config.train.target_accuracy
        self.batch_size = config.train.batch_size

    def train_loss(self, model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images).float(), labels, label_smoothing=self.label_smoothing)

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        per_image = []
        for images, labels in loader:
            logits = model(images).float()
            loss = F.cross_entropy(logits, labels, reduction="none")
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
            stats = torch.stack([loss, top[:, 0].float(), top.any(1).float()], 1)
            per_image.append(accelerator.gather_for_metrics(stats))
        mean = torch.cat(per_image).mean(0)
        return {"val_loss": float(mean[0]), "val_top1": float(mean[1]), "val_top5": float(mean[2])}

    def summarize(self, rows: list[dict]) -> dict:
        """Best top-1 / top-5 and the training seconds (and epoch) when top-1 first reached its best
        and ``train.target_accuracy`` (null if never)."""
        if not rows:
            return {}
        best = max(rows, key=lambda r: r["val_top1"])  # max() keeps the first of equal values
        hit = next((r for r in rows if self.target is not None and r["val_top1"] >= self.target), None)
        return {
            "best_val_top1": best["val_top1"], "best_top1_epoch": best["epoch"],
            "train_seconds_to_best_top1": best["train_seconds"], "best_val_top5": max(r["val_top5"] for r in rows),
            "target_accuracy": self.target, "train_seconds_to_target": hit["train_seconds"] if hit else None,
            "epoch_to_target": hit["epoch"] if hit else None,
        }

    def finish(self, run_dir: RunDir, model: nn.Module, val_set: Dataset, rows: list[dict]) -> None:
        """accuracy_vs_time.png and confusion_matrix.png (validation set, best-val-loss weights)."""
        if rows:
            plots.accuracy_curves({run_dir.path.name: rows}, run_dir.accuracy_plot, self.target)
        k = len(self.classes)
        matrix = np.zeros((k, k), dtype=np.int64)
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            for images, labels in DataLoader(val_set, batch_size=self.batch_size):
                predicted = model(images.to(device)).argmax(1).cpu()
                np.add.at(matrix, (labels.numpy(), predicted.clamp_max(k - 1).numpy()), 1)
        plots.confusion_matrix(matrix, self.classes, run_dir.confusion_plot)


def classify(config: ClassifyConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
             stem: str = "classify", clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train a zoo classifier; returns the summary (also the run's summary.json).

    ``resume`` continues a run directory (with ``config``, or else the run's own config.yaml);
    ``clock`` (seconds) measures the training time.
    """
    config = job_config(ClassifyConfig, config, resume)
    torch.manual_seed(config.train.seed)
    channels, size, _ = input_size(config.model)
    train_data, val_data = train_val_datasets(config.data, channels, size, augment=config.data.augment)
    _align_classes(train_data, val_data)
    train_set, val_set = (cached(train_data), cached(val_data)) if config.data.cache else (train_data, val_data)
    classes, bad = list(train_data.classes), sorted(set(train_data.bad_files) | set(val_data.bad_files))
    if config.model.num_classes is None:
        config.model.num_classes = len(classes)
    elif config.model.num_classes < len(classes):
        raise UserInputError(f"model.num_classes={config.model.num_classes} but the training data has {len(classes)} classes")
    model = build_classifier(config.model, config.decor)
    with open_run(config, out, resume, stem) as run_dir:
        if process_state().is_main_process:
            write_json(run_dir.classes, classes)
        task = ClassifyTask(model, classes, config)
        extra = {"arch": config.model.arch, "num_classes": config.model.num_classes, "bad_files": bad,
                 "train_images": len(train_set), "val_images": len(val_set)}
        policy = DecorPolicy(model, config.decor)
        return fit(config, task, policy, train_set, val_set, run_dir, resume=resume is not None, extra_summary=extra, clock=clock)

