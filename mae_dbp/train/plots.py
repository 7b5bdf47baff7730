"""PNG plots a person would rather look at than read: loss vs wall-clock, decorrelation, images."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mae_dbp.data.display import stretch  # noqa: E402


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
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in rows_by_run.items():
        t = [r["train_seconds"] / scale for r in rows]
        axes[0].plot(t, [r["train_loss"] for r in rows], marker=".", label=name)
        axes[1].plot(t, [r[metric] for r in rows], marker=".", label=name)
    for ax, title in zip(axes, ("training loss", metric.replace("_", " "))):
        ax.set_xlabel(f"training wall-clock ({unit})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def decorrelation(site_rows: list[dict], path: Path) -> Path:
    """Mean squared off-diagonal correlation of each DBP layer's input z, per epoch (log scale)."""
    sites = [k for k in site_rows[0] if k not in ("epoch", "step")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 1, max(1, len(sites))))
    for color, site in zip(colors, sites):
        values = [r.get(site, math.nan) for r in site_rows]
        ax.plot([r["epoch"] for r in site_rows], values, color=color, label=site, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean squared off-diagonal correlation of z")
    ax.set_title("decorrelation per DBP layer")
    ax.grid(alpha=0.3, which="both")
    if len(sites) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float -> (H, W, 3) or (H, W) in [0, 1]: RGB for 3 channels, else channel 0,
    each contrast-stretched between its 1st and 99th percentile."""
    return stretch(image[:3].transpose(1, 2, 0) if image.shape[0] == 3 else image[0])


def image_grid(columns: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """One row per sample, one column per named stack of (N, C, H, W) images."""
    names = list(columns)
    n = len(columns[names[0]])
    fig, axes = plt.subplots(n, len(names), figsize=(2.2 * len(names), 2.2 * n), squeeze=False)
    for i in range(n):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(display(columns[name][i]), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
