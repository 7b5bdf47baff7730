"""PNG plots a person would rather look at than read: loss vs wall-clock, decorrelation, images;
for classification runs accuracy vs wall-clock and the confusion matrix.

Figures are :class:`matplotlib.figure.Figure` objects written by their own canvas: no pyplot, no
backend chosen at import (a notebook user's backend stays theirs), nothing left open.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure



def figure(width: float, height: float, rows: int = 1, columns: int = 1, squeeze: bool = True):
    """(Figure, axes) of ``rows`` x ``columns`` subplots (``Figure.subplots``), not attached to pyplot."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(rows, columns, squeeze=squeeze)


def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Lay out ``fig`` and write it as PNG to ``path`` (its folder made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def _seconds_axis(rows_by_run: dict[str, list[dict]]) -> tuple[float, str]:
    longest = max((r["train_seconds"] for rows in rows_by_run.values() for r in rows), default=0.0)
    if longest > 2 * 3600:
        return 3600.0, "hours"
    if longest > 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def loss_curves(rows_by_run: dict[str, list[dict]], path: Path, metric: str = "val_loss") -> Path:
    """Train and validation loss against training wall-clock (validation excluded), one line per run."""
    scale, unit = _seconds_axis(rows_by_run)
    fig, axes = figure(11, 4, 1, 2)
    for name, rows in rows_by_run.items():
        t = [r["train_seconds"] / scale for r in rows]
        axes[0].plot(t, [r["train_loss"] for r in rows], marker=".", label=name)
        axes[1].plot(t, [r[metric] for r in rows], marker=".", label=name)
    for ax, title in zip(axes, ("training loss", metric.replace("_", " "))):
        ax.set_xlabel(f"training wall-clock ({unit})")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def probe_curves(rows_by_run: dict[str, list[dict]], path: Path) -> Path:
    """The linear probe's validation score against training wall-clock, one line per run (epochs
    without a probe are skipped)."""
    scale, unit = _seconds_axis(rows_by_run)
    fig, ax = figure(6, 4)
    metric = "score"
    for name, rows in rows_by_run.items():
        probed = [r for r in rows if isinstance(r.get("probe_score"), (int, float)) and not math.isnan(r["probe_score"])]
        metric = next((str(r["probe_metric"]) for r in probed if r.get("probe_metric")), metric)
        ax.plot([r["train_seconds"] / scale for r in probed], [r["probe_score"] for r in probed], marker="o", label=name)
    ax.set_xlabel(f"training wall-clock ({unit})")
    ax.set_ylabel(f"linear probe {metric} (%)")
    ax.set_title(f"linear probe on the frozen encoder: validation {metric} (higher: more useful features)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def decorrelation(site_rows: list[dict], path: Path) -> Path:
    """Mean squared off-diagonal correlation of each DBP layer's input z, per epoch (log scale; 0 =
    fully decorrelated), one line and marker per named site."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

    sites = [k for k in site_rows[0] if k not in ("epoch", "step")]
    fig, ax = figure(8, 4.5)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(1, len(sites))))
    for color, site in zip(colors, sites):
        values = [r.get(site, math.nan) for r in site_rows]
        ax.plot([r["epoch"] for r in site_rows], values, color=color, label=site, lw=1.2, marker="o", ms=3)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("how correlated the layer's input still is\n(mean squared correlation between features)")
    ax.set_title("decorrelation of each DBP layer's input (lower: more decorrelated)")
    ax.grid(alpha=0.3, which="both")
    if len(sites) <= 16:
        ax.legend(fontsize=7, title="DBP layer", title_fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save(fig, path)


HIDDEN_COLOUR = (0.25, 0.45, 0.85)  # masked-out patches: a colour no grey-scale image has


def _panels(name: str, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(title, H x W or H x W x 3 array) of one (C, H, W) image: RGB for 3 channels, each channel of
    a 2-channel image on its own, else channel 0 (said in the title)."""
    channels = image.shape[0]
    if channels == 3:
        return [(name, image.transpose(1, 2, 0))]
    if channels == 2:
        return [(f"{name}, channel {c}", image[c]) for c in range(2)]
    return [(name if channels == 1 else f"{name}, channel 0 of {channels}", image[0])]


def image_grid(columns: dict[str, np.ndarray], path: Path, title: str = "",
               hidden: dict[str, np.ndarray] | None = None) -> Path:
    """One row per sample, one column per named stack of (N, C, H, W) images (:func:`_panels`: RGB,
    both channels of a 2-channel image, or channel 0), every panel of a row contrast-stretched like
    its first column (1st - 99th percentile). ``hidden`` {column: (N, H, W) bool}: pixels drawn in
    :data:`HIDDEN_COLOUR` (e.g. the patches an MAE masked out)."""
    names, hidden = list(columns), hidden or {}
    n = len(columns[names[0]])
    layout = [[(name, t, a) for name in names for t, a in _panels(name, columns[name][i])] for i in range(n)]
    fig, axes = figure(2.2 * len(layout[0]), 2.2 * n, n, len(layout[0]), squeeze=False)
    for i, row in enumerate(layout):
        lo, hi = np.percentile(np.asarray(row[0][2], dtype=np.float32), (1.0, 99.0))
        for j, (name, panel_title, array) in enumerate(row):
            shown = np.clip((np.asarray(array, dtype=np.float32) - lo) / max(float(hi - lo), 1e-8), 0.0, 1.0)
            if shown.ndim == 2:
                shown = np.repeat(shown[..., None], 3, axis=-1)
            if name in hidden:
                shown[hidden[name][i]] = HIDDEN_COLOUR
            ax = axes[i][j]
            ax.imshow(shown)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(panel_title, fontsize=9)
    if title:
        fig.suptitle(title)
    return save(fig, path, dpi=100)


def accuracy_curves(rows_by_run: dict[str, list[dict]], path: Path, target: float | None = None) -> Path:
    """Validation top-1 (and top-5, dashed) in % against training wall-clock seconds, one colour per run.

    ``rows_by_run``: run name -> metrics rows holding ``train_seconds``, ``val_top1``, ``val_top5``
    (fractions in [0, 1]); ``target`` (fraction) draws a horizontal line.
    """
    fig, ax = figure(7, 4.5)
    for color, (name, rows) in zip(matplotlib.colormaps["tab10"].colors, rows_by_run.items()):
        seconds = [r["train_seconds"] for r in rows]
        ax.plot(seconds, [100 * r["val_top1"] for r in rows], marker=".", color=color, label=f"{name} top-1")
        ax.plot(seconds, [100 * r["val_top5"] for r in rows], ls="--", color=color, alpha=0.6, label=f"{name} top-5")
    if target is not None:
        ax.axhline(100 * target, color="grey", lw=0.8, ls=":", label=f"target {100 * target:.1f}%")
    ax.set_xlabel("training wall-clock (seconds, validation excluded)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("validation accuracy vs training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts (K, K)."""
    counts = np.asarray(matrix, dtype=np.float64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    k = len(classes)
    side = min(14.0, 2.5 + 0.45 * k)
    fig, ax = figure(side, side)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "validation confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return save(fig, path)
