"""The quickstart's numbers (a BP vs DBP table) and its ``report.md`` with plots."""

from __future__ import annotations

import math
from pathlib import Path

from mae_dbp.train import plots
from mae_dbp.train.records import read_csv


# comparing runs on wall-clock: when did a run first reach another run's best value?


def time_to_reach(rows: list[dict], target: float, key: str = "val_loss", lower_is_better: bool = True,
                  time_key: str = "train_seconds") -> float | None:
    """Training seconds at the first evaluation whose ``key`` reaches ``target`` (None if never)."""
    for row in rows:
        value = float(row[key])
        if math.isfinite(value) and (value <= target if lower_is_better else value >= target):
            return float(row[time_key])
    return None


def best(rows: list[dict], key: str = "val_loss", lower_is_better: bool = True) -> tuple[float, float]:
    """(best value, training seconds when it was first reached)."""
    values = [(float(r[key]), float(r["train_seconds"])) for r in rows if math.isfinite(float(r[key]))]
    if not values:
        return math.nan, math.nan
    pick = min if lower_is_better else max
    value = pick(v for v, _ in values)
    return value, next(t for v, t in values if v == value)


def speedup_vs_baseline(baseline: list[dict], candidate: list[dict], key: str = "val_loss",
                        lower_is_better: bool = True) -> dict:
    """The candidate's wall-clock to the baseline's best value, as a fraction of the baseline's.

    ``fraction`` < 1 means the candidate got there faster; None when it never got there.
    """
    target, baseline_seconds = best(baseline, key, lower_is_better)
    seconds = time_to_reach(candidate, target, key, lower_is_better)
    fraction = seconds / baseline_seconds if seconds is not None and baseline_seconds > 0 else None
    return {"target": target, "baseline_seconds": baseline_seconds, "candidate_seconds": seconds, "fraction": fraction}


def summarize(out: Path, runs: dict[str, dict], seg: dict[str, dict]) -> dict:
    """Per method: best val loss, seconds to it, CO2, mIoU; and DBP's time to BP's best as a fraction."""
    rows = {m: read_csv(out / "pretrain" / m / "metrics.csv") for m in runs}
    speed = speedup_vs_baseline(rows["bp"], rows["dbp"])
    methods = {}
    for method, summary in runs.items():
        methods[method] = {
            "best_val_loss": summary["best_val_loss"],
            "train_seconds_to_best": summary["train_seconds_to_best"],
            "train_seconds_total": summary["train_seconds_total"],
            "epochs": summary["epochs_done"],
            "kg_co2": summary["kg_co2"],
            "kg_co2_to_best": summary["kg_co2_to_best"],
            "mIoU": seg.get(method, {}).get("mIoU"),
            "per_class_iou": seg.get(method, {}).get("per_class_iou", {}),
        }
    return {"methods": methods, "dbp_time_to_bp_best": speed}


def table(results: dict) -> str:
    """Markdown table of the results (also printed to the terminal)."""
    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    speed = results["dbp_time_to_bp_best"]
    lines = ["| method | best val loss | train s to best | epochs | kg CO2 | mIoU (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method, m in results["methods"].items():
        lines.append(f"| {method.upper()} | {m['best_val_loss']:.4f} | {m['train_seconds_to_best']:.1f} | "
                     f"{m['epochs']} | {m['kg_co2']:.2e} | {fmt(m['mIoU'], '.2f')} |")
    if speed["fraction"] is None:
        verdict = f"DBP did not reach BP's best val loss ({speed['target']:.4f}) within the budget"
    else:
        verdict = (f"DBP reached BP's best val loss ({speed['target']:.4f}) after {speed['candidate_seconds']:.1f} s "
                   f"vs BP's {speed['baseline_seconds']:.1f} s: **{speed['fraction']:.2f}x** the wall-clock")
    return "\n".join(lines) + "\n\n" + verdict + "\n"


def write_report(out: Path, results: dict, size) -> Path:
    """report.md beside the runs, with the comparison plot and links to each run's own plots."""
    rows = {m.upper(): read_csv(out / "pretrain" / m / "metrics.csv") for m in results["methods"]}
    plots.loss_curves(rows, out / "loss_vs_time.png")
    text = table(results)
    print("\n" + text)
    previews = [p for m in results["methods"] for p in sorted((out / "segment" / m / "vis").glob("*.png"))[:2]]
    lines = [
        "# mae-dbp quickstart: BP vs DBP",
        "",
        f"Synthetic 2-channel 16-bit wire-bonding images ({size.image_size} px): {size.pretrain_images} for MAE "
        f"pretraining, {size.seg_train_images} / {size.seg_val_images} labelled for segmentation. Both methods "
        f"pretrain the same small ViT MAE with the same data, seed and a {size.pretrain_seconds:.0f} s training "
        f"budget; each encoder is exported (DBP fused: W <- W R) and fine-tuned as a tiny UperNet for "
        f"{size.seg_iters} iterations.",
        "",
        text,
        "## Pretraining loss against training wall-clock (validation excluded)",
        "",
        "![loss vs time](loss_vs_time.png)",
        "",
        "## Decorrelation of each DBP layer's input",
        "",
        "![decorrelation](pretrain/dbp/decorrelation.png)",
        "",
        "## Validation reconstructions (best checkpoints)",
        "",
        "BP: ![BP reconstructions](pretrain/bp/reconstructions.png)",
        "",
        "DBP: ![DBP reconstructions](pretrain/dbp/reconstructions.png)",
        "",
        "## Segmentation predictions",
        "",
        "Input | ground truth | prediction, for the first validation images of each fine-tune:",
        "",
        *[f"{p.parent.parent.name.upper()}: ![{p.parent.parent.name}]({p.relative_to(out)})" for p in previews],
        "",
        "Numbers from a quickstart on a small CPU are noisy: see docs/benchmarks.md for repeated measurements.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
