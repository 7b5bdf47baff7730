"""The quickstart's numbers and its ``report.md``: the regime, BP vs DBP pretraining, then segmentation."""

from __future__ import annotations

from pathlib import Path

from mae_dbp.bench.finetune import markdown_report as finetune_report
from mae_dbp.bench.report import markdown_table, range_cell
from mae_dbp.bench.results import long_horizon_summary
from mae_dbp.bench.speedup_report import plateau_sentence

SET_NAMES = {"photos": "crops of real photographs (bundled with scikit-learn / matplotlib)",
             "synthetic": "synthetic 2-channel 16-bit wire-bonding images"}


def summarize(comparisons: dict[str, dict], finetune: dict) -> dict:
    """{"comparisons": per data set the bench summary, per-seed pairs, verdicts and whether BP left
    its plateau; "finetune": the ``bench finetune`` result of the wire-bond runs (mIoU per seed)}."""
    compared = {name: {"summary": r["summary"], "runs": r["runs"], "settings": r["settings"], "horizon": r["horizon"],
                       "verdict": verdict(r), "plateau": plateau_sentence(r)} for name, r in comparisons.items()}
    return {"comparisons": compared, "finetune": finetune}


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


def comparison_table(compared: dict[str, dict]) -> str:
    """One row per data set: median (range) over seeds of the headline numbers, then the verdicts."""
    rows = [[name, len(c["runs"]), f"**{range_cell(c['summary']['time_fraction'], '.2f')}**",
             range_cell(c["summary"]["epoch_fraction"], ".2f"), range_cell(c["summary"]["bp_best_val_loss"], ".4f"),
             range_cell(c["summary"]["dbp_best_val_loss"], ".4f"), range_cell(c["summary"]["step_time_ratio"], ".2f")]
            for name, c in compared.items()]
    lines = [markdown_table(["data", "seeds", "DBP time to BP's best / BP's", "in epochs", "best val loss BP",
                             "best val loss DBP", "DBP / BP s per step"], rows), ""]
    for name, c in compared.items():
        lines.append(f"- **{name}**: {c['verdict']['time']}; {c['verdict']['loss']}. {c['plateau']}")
    return "\n".join(lines) + "\n"


def reconstructions(name: str, compared: dict) -> list[str]:
    """The seed-0 BP and DBP runs' validation reconstructions of one data set side by side."""
    seed0 = compared["runs"][0]
    return ["| BP | DBP |", "| --- | --- |",
            f"| ![BP](pretrain/{name}/{seed0['bp_run']}/reconstructions.png) "
            f"| ![DBP](pretrain/{name}/{seed0['dbp_run']}/reconstructions.png) |", ""]


def probe_report(out: Path, compared: dict[str, dict]) -> list[str]:
    """Per data set whose runs had a linear probe (``eval.probe``): DBP's time to BP's best probe
    score, both best scores, and a plot of every seed's probe score against training time."""
    from mae_dbp.train.plots import probe_curves
    from mae_dbp.train.records import read_csv

    lines = []
    for name, c in compared.items():
        s = c["summary"]
        if "probe_time_fraction" not in s:
            continue
        metric = s.get("probe_metric", "score")
        rows = {f"{m.upper()} seed {r['seed']}": read_csv(out / "pretrain" / name / r[f"{m}_run"] / "metrics.csv")
                for r in c["runs"] for m in ("bp", "dbp")}
        probe_curves(rows, out / f"probe_vs_time_{name}.png")
        lines += [f"## Does DBP reach BP's features sooner? ({name})", "",
                  f"A linear probe (ridge regression on the frozen encoder's patch tokens, scored as {metric} on the "
                  "labelled validation images) after every epoch of the same runs. DBP's training time to BP's best "
                  f"probe {metric} / BP's: **{range_cell(s['probe_time_fraction'], '.2f')}** (in optimizer steps "
                  f"{range_cell(s['probe_step_fraction'], '.2f')}); best probe {metric} BP "
                  f"{range_cell(s['bp_best_probe'], '.2f')}, DBP {range_cell(s['dbp_best_probe'], '.2f')} (median (range) "
                  "over seeds; `never`: not within the run). At this size the probe moves little from its score on "
                  "untrained weights: read it as a check that features do not get worse, not as a ranking.", "",
                  f"![probe {metric} vs time](probe_vs_time_{name}.png)", ""]
    return lines


def write_report(out: Path, results: dict, size) -> Path:
    """report.md: the regime, the BP vs DBP pretraining comparison, then export and segmentation."""
    compared, finetune = results["comparisons"], results["finetune"]
    table, seg = comparison_table(compared), finetune_report(finetune)
    print("\n" + table + "\n" + seg)
    seed0 = compared["synthetic"]["runs"][0]
    previews = [p for r in finetune["runs"][:1] for m in ("bp", "dbp")
                for p in sorted((out / "finetune" / f"{m}-seed{r['seed']}" / "segment" / "vis").glob("*.png"))[:2]]
    missing = [] if "photos" in compared else ["No photo comparison: scikit-learn is not installed "
                                               "(`pip install -e '.[bench]'`).", ""]
    steps = {name: int(c["runs"][0]["bp_steps"]) for name, c in compared.items()}
    lines = [
        "# mae-dbp quickstart: BP vs DBP",
        "",
        "## Does DBP reach BP's best validation loss sooner?",
        "",
        *missing,
        table,
        f"Regime: the **short horizon**, {size.pretrain_epochs} epochs = "
        + ", ".join(f"{n} optimizer steps on the {name} set" for name, n in steps.items())
        + "; a short-run result, not the papers' long-training claim (that one is next).",
        "",
        long_horizon_summary(),
        "",
        "## How these runs were made",
        "",
        f"The same small ViT MAE pretrained with BP and with DBP on each data set ({size.photo_train_crops} photo "
        f"crops), seeds {list(size.seeds)}, {size.pretrain_epochs} epochs of warm-up + cosine (wall-clock cap "
        f"{size.pretrain_seconds:.0f} s per run); on the photos each method at its own lr from the sweep of `mae-dbp "
        "bench speedup` (docs/benchmarks.md), on the wire-bond images at the shipped tiny configs' lr. Times are "
        "training wall-clock (validation excluded) on this machine; the numbers are median (min - max) over seeds. A "
        "difference is called real only when every seed agrees on its sign. In so short a run BP spends much of its "
        "time getting off an early plateau of the validation loss, which DBP leaves sooner, so the time ratio mostly "
        "measures that escape (each data set's line says how far BP had got by a third of its run).",
        "",
        *[f"![{name}](loss_vs_time_{name}.png)\n\n{name}: {SET_NAMES[name]}; each seed a thin line, the median bold.\n"
          for name in compared],
        *probe_report(out, compared),
        "Validation reconstructions of the seed-0 runs (input | masked | reconstruction; the same validation "
        "images with the same fixed masks for BP and DBP), best checkpoint:",
        "",
        *[line for name in compared for line in [f"{name}: {SET_NAMES[name]}", "", *reconstructions(name, compared[name])]],
        "## Export and segmentation (every seed's wire-bond encoders)",
        "",
        f"{size.seg_train_images} / {size.seg_val_images} labelled synthetic images ({size.image_size} px); each "
        f"seed's BP and DBP encoder exported (DBP fused: W <- W R) and fine-tuned as a tiny UperNet for "
        f"{size.seg_iters} iterations at lr {size.seg_lr:g} (`mae-dbp bench finetune`). The photo runs take RGB "
        "and there are no labelled photos, so only the 2-channel wire-bond encoders are fine-tuned.",
        "",
        seg,
        "DBP layers' input decorrelation (seed 0, wire-bond):",
        "",
        f"![decorrelation](pretrain/synthetic/{seed0['dbp_run']}/decorrelation.png)",
        "",
        "Input | ground truth | prediction, for the first validation images of the seed-0 fine-tunes:",
        "",
        *[f"{p.parent.parent.parent.name.split('-')[0].upper()}: ![{p.parent.parent.parent.name}]({p.relative_to(out)})"
          for p in previews],
        "",
        "Small CPU runs are noisy: docs/results.md has the repeated long-horizon measurements behind the defaults.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
