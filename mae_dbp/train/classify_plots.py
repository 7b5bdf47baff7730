"""PNG plots of a classification run: validation accuracy against training time, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_curves(rows_by_run: dict[str, list[dict]], path: Path, target: float | None = None) -> Path:
    """Validation top-1 (and top-5, dashed) in % against training wall-clock seconds, one colour per run.

    ``rows_by_run``: run name -> metrics rows holding ``train_seconds``, ``val_top1``, ``val_top5``
    (fractions in [0, 1]); ``target`` (fraction) draws a horizontal line.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (name, rows) in zip(plt.cm.tab10.colors, rows_by_run.items()):
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts (K, K)."""
    counts = np.asarray(matrix, dtype=np.float64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    k = len(classes)
    side = min(14.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side, side))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
