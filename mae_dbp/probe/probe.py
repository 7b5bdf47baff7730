"""``LinearProbe``: at each probe point, a ridge head on the frozen encoder's features, scored on val.

Segmentation: each patch token regresses the class fractions of its patch less the class's mean
fraction over the train patches (else the background, most of every patch, wins every argmax);
the val scores per patch are upsampled (bilinear) to pixels, their argmax is the mask, scored by mIoU.
Classification: the mean patch token regresses the one-hot class, scored by accuracy.
Deterministic: the data are read once in a fixed order, the head is closed-form, and nothing
draws from the training RNG, so a run has the same losses with and without its probe.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mae_dbp.probe.config import ProbeConfig
from mae_dbp.probe.data import ProbeData, load_probe_data
from mae_dbp.probe.features import encoder_features
from mae_dbp.probe.ridge import fit_ridge, predict
from mae_dbp.probe.score import accuracy, mean_iou

METRIC = {"segmentation": "mIoU", "classification": "accuracy"}


def patch_targets(masks: Tensor, num_classes: int, ignore_index: int, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(class fractions (N*h*w, K) of each patch's labelled pixels, which rows have any) of masks (N, S, S)."""
    valid = masks != ignore_index
    onehot = F.one_hot(torch.where(valid, masks, 0), num_classes).permute(0, 3, 1, 2).float() * valid[:, None]
    sums = F.adaptive_avg_pool2d(onehot, grid)  # (N, K, h, w): fractions of the whole patch
    total = sums.sum(1, keepdim=True)
    fractions = (sums / total.clamp_min(1e-12)).permute(0, 2, 3, 1).reshape(-1, num_classes)
    return fractions, total.reshape(-1) > 0


class LinearProbe:
    """The ``eval.probe`` of a run; reads its folder at :meth:`prepare` or the first :meth:`run`."""

    def __init__(self, cfg: ProbeConfig, channels: int, img_size: int, mean: list[float], std: list[float]) -> None:
        self.cfg, self.metric = cfg, METRIC[cfg.kind]
        self._load = lambda: load_probe_data(cfg, channels, img_size, mean, std)
        self.data: ProbeData | None = None

    def prepare(self) -> "LinearProbe":
        """Read the folder now (a bad folder is one error line before training starts, not after an epoch)."""
        if self.data is None:
            self.data = self._load()
        return self

    def due(self, epoch: int, last_epoch: int) -> bool:
        """Whether ``epoch`` is a probe point: every ``every``-th epoch, and the last one."""
        return epoch % self.cfg.every == 0 or epoch == last_epoch

    def score(self, encoder: nn.Module, device: torch.device) -> float:
        """The val score (%) of a ridge head fitted on the train split's features of ``encoder``."""
        data, cfg = self.prepare().data, self.cfg
        segment = cfg.kind == "segmentation"
        train = encoder_features(encoder, data.train.images, not segment, cfg.batch_size, device)
        val = encoder_features(encoder, data.val.images, not segment, cfg.batch_size, device)
        k = len(data.classes)
        if not segment:
            weight, bias = fit_ridge(train, F.one_hot(data.train.targets, k).double(), cfg.ridge)
            return accuracy(predict(val, weight, bias).argmax(1), data.val.targets)
        grid = tuple(train.shape[1:3])
        targets, labelled = patch_targets(data.train.targets, k, data.ignore_index, grid)
        targets = targets[labelled]
        targets = targets - targets.mean(0)  # above each class's mean fraction: rare classes can win the argmax
        weight, bias = fit_ridge(train.reshape(-1, train.shape[-1])[labelled], targets, cfg.ridge)
        scores = predict(val.reshape(-1, val.shape[-1]), weight, bias).float()
        scores = scores.reshape(val.shape[0], *grid, k).permute(0, 3, 1, 2)
        pixels = F.interpolate(scores, size=tuple(data.val.targets.shape[1:]), mode="bilinear", align_corners=False)
        return mean_iou(pixels.argmax(1), data.val.targets, k, data.ignore_index)

    def run(self, encoder: nn.Module, device: torch.device) -> dict:
        """``{probe_score, probe_metric, probe_seconds}`` for the metrics row of this epoch."""
        start = time.perf_counter()
        score = self.score(encoder, device)
        return {"probe_score": score, "probe_metric": self.metric, "probe_seconds": round(time.perf_counter() - start, 3)}


def best_probe(rows: list[dict]) -> dict:
    """summary.json entries from the metrics rows: the best probe score, its epoch and the training
    seconds to it (empty without probe rows)."""
    probed = [r for r in rows if isinstance(r.get("probe_score"), (int, float)) and not math.isnan(r["probe_score"])]
    if not probed:
        return {}
    best = max(probed, key=lambda r: (r["probe_score"], -r["epoch"]))
    return {"best_probe_score": best["probe_score"], "probe_metric": best.get("probe_metric"),
            "best_probe_epoch": best["epoch"], "train_seconds_to_best_probe": best["train_seconds"],
            "probe_seconds_total": round(sum(r.get("probe_seconds", 0.0) for r in probed), 3)}
