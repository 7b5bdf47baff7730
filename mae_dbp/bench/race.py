"""``bench speedup --optimizers adamw muon ...``: a race of optimizers with and without DBP.

Every arm (each optimizer as plain BP, and with DBP) runs the same protocol as ``bench speedup``
(:func:`mae_dbp.bench.speedup.run_speedup_bench`): the same data, horizon, lr multipliers on the
sweep seeds, then one run per seed at the arm's pick, the arms' order reversed on every other seed.

The **reference** is the best baseline: the non-DBP arm with the lowest median best validation
loss. Per arm and seed, against the reference run of the same seed (its best loss ``L``, reached
after ``S`` optimizer steps and ``T`` training seconds):

- ``step_fraction`` / ``time_fraction``: the arm's optimizer steps / training seconds to first
  reach ``L`` at a validation point, over ``S`` / ``T`` (epoch resolution; None: never);
- ``speedup_curve_steps`` / ``speedup_curve_seconds``: the speed-up curve against the reference
  (:func:`mae_dbp.bench.curves.speedup_curve`) read in optimizer steps and in training seconds;
- the arm's best validation loss and seconds per optimizer step.

Each is summarised as median (range) over seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mae_dbp.bench import curves
from mae_dbp.bench.compare import VAL_LOSS, median_range, ratio, seconds_per_step
from mae_dbp.bench.report import fmt, range_cell
from mae_dbp.bench.report import markdown_table as table
from mae_dbp.bench.speedup import curve_of

SEED_KEYS = ("best_val_loss", "step_fraction", "time_fraction", "seconds_per_step")


def step_curve(record: dict) -> list[tuple[float, float]]:
    """(optimizer steps, validation loss) per epoch of a run record."""
    return [(r["step"], r["val_loss"]) for r in record["rows"]]


def against(record: dict, reference: dict) -> dict:
    """One arm's run against the reference run of the same seed (module docstring)."""
    target = VAL_LOSS.best(reference["rows"])
    hit = VAL_LOSS.first_reach(record["rows"], target["val_loss"]) or {}
    return {"best_val_loss": VAL_LOSS.best(record["rows"])["val_loss"],
            "step_fraction": ratio(hit.get("step"), target["step"]),
            "time_fraction": ratio(hit.get("train_seconds"), target["train_seconds"]),
            "seconds_per_step": seconds_per_step(record["rows"]),
            "speedup_curve_steps": curves.speedup_curve(step_curve(reference), step_curve(record)),
            "speedup_curve_seconds": curves.speedup_curve(curve_of(reference), curve_of(record))}


def race_summary(results: dict, sweep: dict, arms: dict[str, tuple[str, str]], seeds: Sequence[int]) -> dict:
    """{"reference", "arms": {arm: {"optimizer", "method", "lr", "seeds", <median_range of SEED_KEYS>,
    "curve_steps", "curve_seconds"}}, "step_curves"} of the runs ``results[(arm, seed)]``."""
    best = {arm: median_range([VAL_LOSS.best(results[(arm, seed)]["rows"])["val_loss"] for seed in seeds])
            for arm in arms}
    baselines = [arm for arm, (_, method) in arms.items() if method == "bp"]
    reference = min(baselines, key=lambda arm: best[arm]["median"])
    out = {}
    for arm, (optimizer, method) in arms.items():
        per_seed = [{"seed": seed, **against(results[(arm, seed)], results[(reference, seed)])} for seed in seeds]
        out[arm] = {"optimizer": optimizer, "method": method, "lr": sweep[arm]["chosen"], "seeds": per_seed,
                    **{key: median_range([p[key] for p in per_seed]) for key in SEED_KEYS},
                    "curve_steps": curves.curve_summary([{"speedup_curve": p["speedup_curve_steps"]} for p in per_seed]),
                    "curve_seconds": curves.curve_summary([{"speedup_curve": p["speedup_curve_seconds"]} for p in per_seed])}
    step_curves = {arm: {str(seed): step_curve(results[(arm, seed)]) for seed in seeds} for arm in arms}
    return {"reference": reference, "arms": out, "step_curves": step_curves}


def _curve_cells(points: list[dict]) -> str:
    return " / ".join(fmt(p["time_fraction"]["median"], ".2f") if p["time_fraction"]["median"] is not None else "never"
                      for p in points)


def markdown_race(result: dict) -> str:
    """One row per arm: its pick, best loss, steps and seconds to the reference's best, step cost,
    and the speed-up curves; then the sentence that names the reference."""
    race, clock = result["race"], result["settings"].get("clock", "wall")
    reference = race["reference"]
    ref_step = race["arms"][reference]["seconds_per_step"]["median"]
    rows = []
    for arm, entry in race["arms"].items():
        rows.append([f"**{arm}**" if arm == reference else arm, f"{entry['lr']:g}",
                     range_cell(entry["best_val_loss"], ".4f"), range_cell(entry["step_fraction"], ".2f"),
                     range_cell(entry["time_fraction"], ".2f"), _curve_cells(entry["curve_steps"]),
                     _curve_cells(entry["curve_seconds"]),
                     fmt(ratio(entry["seconds_per_step"]["median"], ref_step), ".2f")])
    header = ["arm", "base lr picked", "best val loss", f"steps to {reference}'s best / its steps",
              f"{clock} s to {reference}'s best / its s", "speed-up curve in steps, 25 / 50 / 75 / 100%",
              f"speed-up curve in {clock} s", f"s per step / {reference}'s"]
    return (f"Reference: **{reference}**, the baseline (no DBP) with the lowest median best validation loss. "
            "Fractions are median (range) over seeds, each seed against the reference run of the same seed; "
            "never: the arm did not reach the reference's best loss at any validation.\n\n" + table(header, rows) + "\n")


ARM_STYLES = {"bp": "-", "dbp": "--"}


def race_plot(result: dict, path: Path, title: str = "optimizers with and without DBP") -> Path:
    """Median best-so-far validation loss of every arm against optimizer steps (left) and training
    seconds (right); one colour per optimizer, dashed with DBP."""
    import numpy as np

    from mae_dbp.bench.speedup_report import median_curve
    from mae_dbp.train.plots import figure, save

    race = result["race"]
    optimizers = list(dict.fromkeys(e["optimizer"] for e in race["arms"].values()))
    colours = {o: f"C{i}" for i, o in enumerate(optimizers)}
    fig, (left, right) = figure(12, 4.5, 1, 2)
    for ax, by_arm in ((left, race["step_curves"]), (right, result["curves"])):
        for arm, by_seed in by_arm.items():
            entry = race["arms"][arm]
            runs = [curves.best_so_far(c) for c in by_seed.values() if c]
            if runs:
                grid, middle = median_curve(runs)
                ax.plot(grid, middle, color=colours[entry["optimizer"]], ls=ARM_STYLES[entry["method"]], lw=2,
                        label=f"{arm} (base lr {entry['lr']:g})")
        ax.grid(alpha=0.3)
        ax.set_ylabel("best-so-far validation loss (median of seeds)")
    lows = [v for e in race["arms"].values() for v in [e["best_val_loss"]["min"]] if v is not None]
    if lows:
        for ax in (left, right):
            top = ax.get_ylim()[1]
            ax.set_ylim(min(lows) * 0.98, min(top, float(np.median(lows)) * 1.25))
    left.set_xlabel("optimizer steps")
    right.set_xlabel(f"training {'process CPU' if result['settings'].get('clock') == 'cpu' else 'wall-clock'} seconds")
    left.legend(fontsize=8)
    fig.suptitle(title)
    return save(fig, path)
