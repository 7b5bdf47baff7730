"""The quickstart's numbers and its ``report.md``: BP vs DBP pretraining first, then segmentation."""

from __future__ import annotations

from pathlib import Path

from mae_dbp.train.records import read_csv

SET_NAMES = {"photos": "crops of real photographs (bundled with scikit-learn / matplotlib)",
             "synthetic": "synthetic 2-channel 16-bit wire-bonding images"}


def summarize(comparisons: dict[str, dict], runs: dict[str, Path], seg: dict[str, dict]) -> dict:
    """{"comparisons": per data set the bench summary, per-seed pairs and verdicts; "methods": the
    seed-0 wire-bond runs that were exported, with mIoU; "dbp_time_to_bp_best": for those two}."""
    rows = {m: read_csv(Path(run_dir) / "metrics.csv") for m, run_dir in runs.items()}
    methods = {}
    for method, method_rows in rows.items():
        best = min(method_rows, key=lambda r: r["val_loss"])
        methods[method] = {
            "best_val_loss": best["val_loss"], "train_seconds_to_best": best["train_seconds"],
            "train_seconds_total": method_rows[-1]["train_seconds"], "epochs": int(method_rows[-1]["epoch"]),
            "kg_co2": method_rows[-1].get("kg_co2"), "mIoU": seg.get(method, {}).get("mIoU"),
            "per_class_iou": seg.get(method, {}).get("per_class_iou", {}),
        }
    compared = {name: {"summary": r["summary"], "runs": r["runs"], "settings": r["settings"], "verdict": verdict(r)}
                for name, r in comparisons.items()}
    pair = comparisons["synthetic"]["runs"][0]  # the exported seed-0 pair
    speed = {"target": pair["bp_best_val_loss"], "baseline_seconds": pair["bp_seconds_to_best"],
             "candidate_seconds": pair["dbp_seconds_to_bp_best"], "fraction": pair["time_fraction"]}
    return {"comparisons": compared, "methods": methods, "dbp_time_to_bp_best": speed}


def verdict(result: dict) -> dict[str, str]:
    """Plain words for time-to-BP's-best and the loss gap; "within noise" when the seeds disagree."""
    fractions = [r["time_fraction"] for r in result["runs"]]
    gaps = [r["dbp_best_val_loss"] - r["bp_best_val_loss"] for r in result["runs"]]
    n = len(fractions)
    if all(f is not None and f < 1 for f in fractions):
        time = f"DBP reached BP's best validation loss sooner in all {n} seeds"
    elif all(f is None or f > 1 for f in fractions):
        time = f"DBP was slower to BP's best validation loss (or never got there) in all {n} seeds"
    else:
        time = f"within noise: DBP was faster to BP's best in some of the {n} seeds and slower in others"
    if all(g < 0 for g in gaps):
        loss = f"DBP's best validation loss was lower in all {n} seeds"
    elif all(g > 0 for g in gaps):
        loss = f"BP's best validation loss was lower in all {n} seeds"
    else:
        loss = "within noise: the sign of the best-loss gap differs between seeds"
    if n < 3:
        time, loss = time + f" (only {n} seeds: no claim)", loss + f" (only {n} seeds: no claim)"
    return {"time": time, "loss": loss}


def _fmt(value, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def comparison_table(compared: dict[str, dict]) -> str:
    """One row per data set: median (range) over seeds of the headline numbers."""
    def cell(entry: dict, spec: str) -> str:
        text = f"{_fmt(entry['median'], spec)} ({_fmt(entry['min'], spec)} - {_fmt(entry['max'], spec)})"
        return text + (f", never in {entry['never']}" if entry["never"] else "")

    lines = ["| data | seeds | DBP time to BP's best / BP's | in epochs | best val loss BP | best val loss DBP "
             "| DBP / BP s per step |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in compared.items():
        s = c["summary"]
        lines.append(f"| {name} | {len(c['runs'])} | **{cell(s['time_fraction'], '.2f')}** | {cell(s['epoch_fraction'], '.2f')} "
                     f"| {cell(s['bp_best_val_loss'], '.4f')} | {cell(s['dbp_best_val_loss'], '.4f')} "
                     f"| {cell(s['step_time_ratio'], '.2f')} |")
    lines.append("")
    for name, c in compared.items():
        lines.append(f"- **{name}**: {c['verdict']['time']}; {c['verdict']['loss']}.")
    return "\n".join(lines) + "\n"


def seg_table(results: dict) -> str:
    """The two exported seed-0 wire-bond runs and their UperNet fine-tunes."""
    lines = ["| method | best val loss | train s to best | epochs | kg CO2 | mIoU (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method, m in results["methods"].items():
        lines.append(f"| {method.upper()} | {m['best_val_loss']:.4f} | {m['train_seconds_to_best']:.1f} | "
                     f"{m['epochs']} | {_fmt(m['kg_co2'], '.2e')} | {_fmt(m['mIoU'], '.2f')} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, results: dict, size) -> Path:
    """report.md: the BP vs DBP pretraining comparison first, then export and segmentation."""
    compared = results["comparisons"]
    table = comparison_table(compared)
    print("\n" + table + "\n" + seg_table(results))
    seed0 = compared["synthetic"]["runs"][0]
    previews = [p for m in results["methods"] for p in sorted((out / "segment" / m / "vis").glob("*.png"))[:2]]
    missing = [] if "photos" in compared else ["No photo comparison: scikit-learn is not installed "
                                               "(`pip install -e '.[bench]'`).", ""]
    lines = [
        "# mae-dbp quickstart: BP vs DBP",
        "",
        "## Does DBP reach BP's best validation loss sooner?",
        "",
        f"The same small ViT MAE pretrained with BP and with DBP on each data set, seeds {list(size.seeds)}, "
        f"{size.pretrain_epochs} epochs of warm-up + cosine (wall-clock cap {size.pretrain_seconds:.0f} s per run); on the "
        "photos each method at its own lr from the sweep of `mae-dbp bench speedup` (docs/benchmarks.md), on the "
        "wire-bond images at the shipped tiny configs' lr. Times are training wall-clock (validation excluded) "
        "on this machine; the numbers are median (min - max) over seeds. A difference is called real only when "
        "every seed agrees on its sign.",
        "",
        *missing,
        table,
        *[f"![{name}](loss_vs_time_{name}.png)\n\n{name}: {SET_NAMES[name]}; each seed a thin line, the median bold.\n"
          for name in compared],
        "## Export and segmentation (seed-0 wire-bond encoders)",
        "",
        f"{size.seg_train_images} / {size.seg_val_images} labelled synthetic images ({size.image_size} px); each "
        f"encoder exported (DBP fused: W <- W R) and fine-tuned as a tiny UperNet for {size.seg_iters} iterations.",
        "",
        seg_table(results),
        "DBP layers' input decorrelation:",
        "",
        f"![decorrelation](pretrain/synthetic/{seed0['dbp_run']}/decorrelation.png)",
        "",
        f"Validation reconstructions, BP: ![BP](pretrain/synthetic/{seed0['bp_run']}/reconstructions.png) "
        f"DBP: ![DBP](pretrain/synthetic/{seed0['dbp_run']}/reconstructions.png)",
        "",
        "Input | ground truth | prediction, for the first validation images of each fine-tune:",
        "",
        *[f"{p.parent.parent.name.upper()}: ![{p.parent.parent.name}]({p.relative_to(out)})" for p in previews],
        "",
        "Small CPU runs are noisy: see docs/benchmarks.md for the repeated measurements behind the defaults.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
