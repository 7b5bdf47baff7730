"""``bench speedup`` output: a markdown table and a PNG of validation loss against training seconds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"bp": "tab:blue", "dbp": "tab:orange"}


def _fmt(value, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def _range(entry: dict, spec: str) -> str:
    text = f"{_fmt(entry['median'], spec)} ({_fmt(entry['min'], spec)} - {_fmt(entry['max'], spec)})"
    return text + (f", never in {entry['never']}" if entry["never"] else "")


def markdown_table(result: dict) -> str:
    """Headline (median and range over seeds), the lr sweep, and the per-seed numbers."""
    s, settings = result["summary"], result["settings"]
    lines = [
        "| measure | median (range) over seeds |", "| --- | --- |",
        f"| clock of the training seconds | {settings.get('clock', 'wall')} |",
        f"| DBP seconds to BP's best val loss / BP's | **{_range(s['time_fraction'], '.2f')}** |",
        f"| same in epochs | {_range(s['epoch_fraction'], '.2f')} |",
        f"| DBP kg CO2 to BP's best / BP's | {_range(s['co2_fraction'], '.2f')} |",
        f"| best val loss, BP | {_range(s['bp_best_val_loss'], '.4f')} |",
        f"| best val loss, DBP | {_range(s['dbp_best_val_loss'], '.4f')} |",
        f"| DBP / BP seconds per step | {_range(s['step_time_ratio'], '.2f')} |",
        f"| CPU s per wall s, BP / DBP (threads: {settings['threads']}) | "
        f"{_range(s['bp_cpu_per_wall'], '.2f')} / {_range(s['dbp_cpu_per_wall'], '.2f')} |",
        "", "lr sweep (train.base_lr; best val loss, median over sweep seeds " + str(settings["sweep_seeds"]) + "):", "",
        "| method | best val loss at each base lr | chosen |", "| --- | --- | --- |",
    ]
    for method, entry in result["sweep"].items():
        cells = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in zip(entry["lrs"], entry["best_val_loss"]))
        lines.append(f"| {method.upper()} | {cells} | {entry['chosen']:g} |")
    levels = settings["thresholds"]
    lines += ["", "| seed | BP best (s, epoch) | DBP best | DBP s to BP's best | time frac. | epoch frac. | "
              + " | ".join(f"to {t:.4g}: BP / DBP s" for t in levels) + " |", "|" + "---|" * (6 + len(levels))]
    for r in result["runs"]:
        cells = [f"{_fmt(c['bp_seconds'], '.1f')} / {_fmt(c['dbp_seconds'], '.1f')}" for c in r["to_threshold"].values()]
        lines.append(f"| {r['seed']} | {r['bp_best_val_loss']:.4f} ({r['bp_seconds_to_best']:.1f}, {r['bp_epoch_of_best']:.0f}) "
                     f"| {r['dbp_best_val_loss']:.4f} | {_fmt(r['dbp_seconds_to_bp_best'], '.1f')} | "
                     f"{_fmt(r['time_fraction'], '.2f')} | {_fmt(r['epoch_fraction'], '.2f')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def median_curve(curves: list[list[tuple[float, float]]], points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Median over runs of val loss on a common seconds grid (linear interpolation, up to the shortest run)."""
    end = min(c[-1][0] for c in curves)
    grid = np.linspace(max(c[0][0] for c in curves), end, points)
    values = [np.interp(grid, [t for t, _ in c], [v for _, v in c]) for c in curves]
    return grid, np.median(np.stack(values), axis=0)


def loss_plot(result: dict, path: Path, title: str = "BP vs DBP MAE pretraining") -> Path:
    """Validation loss vs training seconds: each seed a thin line, the median over seeds bold."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, by_seed in result["curves"].items():
        curves = [c for c in by_seed.values() if c]
        for curve in curves:
            ax.plot(*zip(*curve), color=COLORS[method], lw=0.7, alpha=0.45)
        if curves:
            grid, middle = median_curve(curves)
            ax.plot(grid, middle, color=COLORS[method], lw=2.5, label=f"{method.upper()} (median of {len(curves)} seeds)")
    for level in result["settings"]["thresholds"]:
        ax.axhline(level, color="grey", lw=0.6, ls=":")
    clock = "process CPU" if result["settings"].get("clock") == "cpu" else "wall-clock"
    ax.set_xlabel(f"training {clock} seconds (validation excluded)")
    ax.set_ylabel("validation loss (masked patches)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
