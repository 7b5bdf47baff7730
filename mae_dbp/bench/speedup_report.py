"""``bench speedup`` output: markdown tables, a PNG of validation loss against training seconds and
a PNG of the speed-up curve with the loss gap at equal training time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mae_dbp.bench.report import fmt, range_cell
from mae_dbp.bench.report import markdown_table as table

COLORS = {"bp": "tab:blue", "dbp": "tab:orange"}


def _headline(result: dict) -> str:
    s, settings, plan = result["summary"], result["settings"], result.get("horizon", {})
    rows = [
        ("horizon", f"{plan.get('horizon', 'short')}: {plan.get('epochs', settings['epochs'])} epochs x "
                    f"{plan.get('steps_per_epoch', '?')} steps = {plan.get('planned_steps', '?')} optimizer steps on "
                    f"{plan.get('train_images', '?')} training images"),
        ("clock of the training seconds", settings.get("clock", "wall")),
        *([("device", "{device} ({device_name}), {dtype}{c}".format(**result["device"], c=", compiled" * result["device"]["compile"]))]
          if "device" in result else []),
        ("DBP seconds to BP's best val loss / BP's (epoch resolution)", f"**{range_cell(s['time_fraction'], '.2f')}**"),
        ("same in epochs", range_cell(s["epoch_fraction"], ".2f")),
        ("DBP kg CO2 to BP's best / BP's", range_cell(s["co2_fraction"], ".2f")),
        ("best val loss, BP", range_cell(s["bp_best_val_loss"], ".4f")),
        ("best val loss, DBP", range_cell(s["dbp_best_val_loss"], ".4f")),
        ("DBP / BP seconds per step", range_cell(s["step_time_ratio"], ".2f")),
        (f"CPU s per wall s, BP / DBP (threads: {settings['threads']})",
         f"{range_cell(s['bp_cpu_per_wall'], '.2f')} / {range_cell(s['dbp_cpu_per_wall'], '.2f')}"),
        ("share of BP's improvement (first validation to best) made by 1/3 of its run",
         range_cell(s["bp_improvement_by_third"], ".2f")),
        *_probe_rows(s),
    ]
    return table(["measure", "median (range) over seeds"], rows)


def _probe_rows(s: dict) -> list[tuple[str, str]]:
    """The headline's linear-probe rows (:mod:`mae_dbp.bench.probe_reach`), where the config has a probe."""
    if "probe_time_fraction" not in s:
        return []
    metric = s.get("probe_metric", "score")
    return [(f"DBP seconds to BP's best probe {metric} / BP's (probe resolution)",
             f"**{range_cell(s['probe_time_fraction'], '.2f')}**"),
            ("same in optimizer steps", range_cell(s["probe_step_fraction"], ".2f")),
            (f"best probe {metric} (%), BP", range_cell(s["bp_best_probe"], ".2f")),
            (f"best probe {metric} (%), DBP", range_cell(s["dbp_best_probe"], ".2f"))]


def plateau_sentence(result: dict) -> str:
    """Whether BP left its early plateau by the first third of its run, in words, from the curve."""
    entry = result["summary"]["bp_improvement_by_third"]
    if entry["median"] is None:
        return "BP's validation loss did not improve during its run: no plateau reading."
    share = f"{100 * entry['median']:.0f}% (range {fmt(entry['min'], '.0%')} - {fmt(entry['max'], '.0%')}) of its improvement"
    if result.get("horizon", {}).get("bp_left_plateau_by_third"):
        return f"BP left its early plateau by the first third of its run: {share} was done by then."
    return (f"BP had not clearly left its early plateau by the first third of its run: only {share} was done by "
            "then, so this run measures mostly the plateau escape.")


def curve_table(result: dict) -> str:
    """The speed-up curve and the loss gap at equal training time, median (range) over seeds."""
    rows = [[f"{100 * p['fraction']:.0f}%", f"**{range_cell(p['time_fraction'], '.2f')}**",
             range_cell(p["loss_gap"], "+.4f", "n/a"), range_cell(p["relative_loss_gap"], "+.1%", "n/a")]
            for p in result["summary"]["speedup_curve"]]
    return table(["BP's run done", "DBP s to BP's loss there / BP's s", "loss gap DBP - BP at that time",
                  "relative gap"], rows) + ("\n\nn/a: DBP's curve does not reach that time (no extrapolation)."
                                            if any("n/a" in r[2] for r in rows) else "")


def markdown_report(result: dict) -> str:
    """Headline (median and range over seeds), the speed-up curve, the lr sweep, the per-seed numbers."""
    settings, plan = result["settings"], result.get("horizon", {})
    parts = [_headline(result), "", plateau_sentence(result)]
    if plan.get("runs_cut_short"):
        parts += ["", f"Cut short by the --budget before the schedule ended: {', '.join(plan['runs_cut_short'])}."]
    parts += ["", "Speed-up curve: for the loss BP's best-so-far curve reaches at each share of its training seconds, "
              "the training seconds DBP's best-so-far curve takes to first reach it as a fraction of BP's, and DBP's "
              "loss minus BP's at that same time (both curves read identically: linear between validation points).",
              "", curve_table(result), "",
              f"lr sweep (train.base_lr; best val loss, median over sweep seeds {settings['sweep_seeds']}):", ""]
    parts.append(table(["method", "best val loss at each base lr", "chosen"], [
        [m.upper(), ", ".join(f"{lr:g}: {v:.4f}" for lr, v in zip(e["lrs"], e["best_val_loss"])), f"{e['chosen']:g}"]
        for m, e in result["sweep"].items()]))
    levels = settings["thresholds"]
    header = ["seed", "BP best (s, epoch)", "DBP best", "DBP s to BP's best", "time frac.", "epoch frac.",
              *[f"to {t:.4g}: BP / DBP s" for t in levels], *[f"curve {100 * f:.0f}%" for f in (0.25, 0.5, 0.75, 1.0)]]
    rows = []
    for r in result["runs"]:
        reach = [f"{fmt(c['bp_seconds'], '.1f')} / {fmt(c['dbp_seconds'], '.1f')}" for c in r["to_level"].values()]
        curve = [fmt(p["time_fraction"], ".2f") for p in r["speedup_curve"]]
        rows.append([r["seed"], f"{r['bp_best_val_loss']:.4f} ({r['bp_seconds_to_best']:.1f}, {r['bp_epoch_of_best']:.0f})",
                     f"{r['dbp_best_val_loss']:.4f}", fmt(r["dbp_seconds_to_bp_best"], ".1f"), fmt(r["time_fraction"], ".2f"),
                     fmt(r["epoch_fraction"], ".2f"), *reach, *curve])
    parts += ["", table(header, rows)]
    return "\n".join(parts) + "\n"


def with_curves(result: dict) -> dict:
    """A result of a ``bench speedup`` from before the speed-up curve (a process started on the
    older code, or its JSON) completed from its recorded per-seed curves: each run's speed-up curve
    and plateau share, their summaries, ``to_level`` for ``to_threshold``."""
    from mae_dbp.bench import curves
    from mae_dbp.bench.compare import median_range

    if "speedup_curve" in result["summary"]:
        return result
    runs = []
    for run in result["runs"]:
        bp, dbp = (result["curves"][m][str(run["seed"])] for m in ("bp", "dbp"))
        levels = {k: {"bp_epoch": None, "dbp_epoch": None, **v} for k, v in run.get("to_threshold", {}).items()}
        runs.append({"to_level": levels, **run, "speedup_curve": curves.speedup_curve(bp, dbp),
                     "bp_improvement_by_third": curves.improvement_share(bp)})
    summary = {**result["summary"], "speedup_curve": curves.curve_summary(runs),
               "bp_improvement_by_third": median_range([r["bp_improvement_by_third"] for r in runs])}
    return {**result, "runs": runs, "summary": summary}


def markdown_table(result: dict) -> str:
    """:func:`markdown_report` of a result that may predate the speed-up curve (:func:`with_curves`)."""
    return markdown_report(with_curves(result))


def median_curve(curves: list[list[tuple[float, float]]], points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Median over runs of val loss on a common seconds grid (linear interpolation, up to the shortest run)."""
    end = min(c[-1][0] for c in curves)
    grid = np.linspace(max(c[0][0] for c in curves), end, points)
    values = [np.interp(grid, [t for t, _ in c], [v for _, v in c]) for c in curves]
    return grid, np.median(np.stack(values), axis=0)


def _clock_label(result: dict) -> str:
    clock = "process CPU" if result["settings"].get("clock") == "cpu" else "wall-clock"
    return f"training {clock} seconds (validation excluded)"


def loss_plot(result: dict, path: Path, title: str = "BP vs DBP MAE pretraining") -> Path:
    """Validation loss vs training seconds: each seed a thin line, the median over seeds bold."""
    from mae_dbp.train.plots import figure, save

    fig, ax = figure(7, 4.5)
    for method, by_seed in result["curves"].items():
        curves = [c for c in by_seed.values() if c]
        for curve in curves:
            ax.plot(*zip(*curve), color=COLORS[method], lw=0.7, alpha=0.45)
        if curves:
            grid, middle = median_curve(curves)
            ax.plot(grid, middle, color=COLORS[method], lw=2.5, label=f"{method.upper()} (median of {len(curves)} seeds)")
    ax.set_xlabel(_clock_label(result))
    ax.set_ylabel("validation loss (masked patches)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def curve_plot(result: dict, path: Path, title: str = "DBP vs BP over BP's run") -> Path:
    """Left: the speed-up curve (DBP's seconds to BP's loss / BP's) per seed and median; right: the
    relative loss gap DBP - BP at equal training time (%), per seed and median."""
    from mae_dbp.train.plots import figure, save

    fig, (left, right) = figure(11, 4.2, 1, 2)
    for ax, key, scale in ((left, "time_fraction", 1.0), (right, "relative_loss_gap", 100.0)):
        for run in result["runs"]:
            points = [(100 * p["fraction"], scale * p[key]) for p in run["speedup_curve"] if p[key] is not None]
            if points:
                ax.plot(*zip(*points), color="tab:orange", lw=0.8, alpha=0.5, marker=".")
        middle = [(100 * p["fraction"], scale * p[key]["median"]) for p in result["summary"]["speedup_curve"]
                  if p[key]["median"] is not None]
        if middle:
            ax.plot(*zip(*middle), color="tab:orange", lw=2.5, marker="o", label=f"median of {len(result['runs'])} seeds")
        ax.axhline(1.0 if key == "time_fraction" else 0.0, color="tab:blue", lw=1, ls="--", label="BP")
        ax.set_xlabel("share of BP's training seconds (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("DBP seconds to BP's loss / BP's seconds")
    left.set_title("speed-up curve (below 1: DBP sooner)")
    right.set_ylabel("(DBP - BP) / BP best-so-far val loss (%)")
    right.set_title("loss gap at equal training time")
    fig.suptitle(title)
    return save(fig, path)
