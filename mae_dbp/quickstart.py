"""The quickstart job (``mae-dbp quickstart``, :mod:`mae_dbp.commands.quickstart`): what DBP buys, end to end, on this machine.

First the comparison that matters: the same small MAE pretrained with BP and with DBP, each method
at its lr from ``mae-dbp bench speedup``, same data, seeds, schedule and wall-clock cap, on crops of
real photographs bundled with scikit-learn / matplotlib and on built-in synthetic 2-channel 16-bit
wire-bonding images; DBP's time to BP's best validation loss and the loss gap, per seed and as
median + range (:mod:`mae_dbp.bench.speedup`). Then every seed's BP and DBP wire-bond encoder is
exported (DBP fused) and fine-tuned as a tiny UperNet (:mod:`mae_dbp.bench.finetune`: mIoU per seed,
median + range); ``report.md`` has the tables and plots.

Regime: the **short horizon** of ``bench speedup`` (about 200 optimizer steps on 512 photo crops,
where BP sits on an early plateau that DBP leaves sooner); the long-horizon numbers (>= 1,500
steps on >= 4,000 crops) are in docs/results.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_CONFIG = "tiny_cpu_dbp.yaml"  # BP runs switch decor.enabled off
PHOTO_CONFIG = "tiny_photos_dbp.yaml"


@dataclass
class QuickstartSize:
    """How much work the quickstart does (the default fits in about 10 minutes on 2 CPU cores)."""

    pretrain_images: int = 400  # synthetic, 10% of them for validation
    photo_train_crops: int = 512
    photo_val_crops: int = 128
    seeds: tuple[int, ...] = (0, 1, 2)
    seg_train_images: int = 96
    seg_val_images: int = 24
    image_size: int = 64
    photo_size: int = 32
    pretrain_seconds: float = 120.0  # wall-clock cap per pretraining run (the schedule normally ends first)
    pretrain_epochs: int = 12  # the schedule's length (warm-up + cosine), the same for both methods
    seg_iters: int = 40  # per fine-tune of each seed's BP and DBP encoder (1 thread, ~15 s each)
    seg_lr: float = 1e-2  # at 3e-3, 40 iterations learnt only the background


def make_data(out: Path, size: QuickstartSize) -> dict[str, Path | None]:
    """Pretraining sets with train/ + val/ (photo crops: None without scikit-learn) and a labelled
    train/val segmentation set; synthetic sets are seeded."""
    from data_tools.photos import write_photos
    from data_tools.stats import compute_stats
    from data_tools.synthetic import write_synthetic
    from mae_dbp.errors import UserInputError

    data = out / "data"
    n_val = max(1, size.pretrain_images // 10)
    write_synthetic(data / "pretrain" / "train", size.pretrain_images - n_val, size.image_size, seed=0, progress=False)
    write_synthetic(data / "pretrain" / "val", n_val, size.image_size, seed=500, progress=False)
    compute_stats(data / "pretrain" / "train", data / "pretrain" / "stats.json", progress=False)
    try:
        write_photos(data / "photos", size=size.photo_size, train_crops=size.photo_train_crops,
                     val_crops=size.photo_val_crops, seed=0)
        photos: Path | None = data / "photos"
    except UserInputError as error:  # scikit-learn missing: say so in the report, keep going
        print(f"mae-dbp quickstart: no photo comparison ({error})")
        photos = None
    seg_dir = data / "segmentation"
    write_synthetic(seg_dir / "train", size.seg_train_images, size.image_size, seed=1000, progress=False)
    write_synthetic(seg_dir / "val", size.seg_val_images, size.image_size, seed=2000, progress=False)
    compute_stats(seg_dir / "train", seg_dir / "train" / "stats.json", progress=False)
    return {"photos": photos, "synthetic": data / "pretrain", "segmentation": seg_dir}


def compare_pretraining(out: Path, data: dict[str, Path | None], size: QuickstartSize,
                        progress: bool | None = None) -> dict[str, dict]:
    """``bench speedup`` on the photo crops (each method at its lr from the bench's sweep) and on the
    wire-bond images (the shipped tiny configs' lr, with the labelled set as their linear probe)."""
    from mae_dbp.bench.speedup import BEST_LR_MULTIPLIERS, SpeedupSettings, run_speedup_bench
    from mae_dbp.bench.speedup_report import loss_plot

    shipped = {"bp": 1.0, "dbp": 1.0}  # the wire-bond configs' own lr (their base_lr 8e-3)
    sets = {"photos": (PHOTO_CONFIG, [], BEST_LR_MULTIPLIERS),
            # the labelled wire-bond set is the wire-bond runs' online linear probe (eval.probe): DBP judged on features
            "synthetic": (SYNTHETIC_CONFIG, [f"model.img_size={size.image_size}",
                                             f"eval.probe.folder={data['segmentation']}"], shipped)}
    shown = [] if progress is None else [f"log.progress={str(progress).lower()}"]
    results = {}
    for name, (config, overrides, multipliers) in sets.items():
        if data[name] is None:
            continue
        print(f"\n== pretraining BP and DBP on the {name} set, seeds {list(size.seeds)}, "
              f"{size.pretrain_epochs} epochs (cap {size.pretrain_seconds:.0f} s) each ==")
        settings = SpeedupSettings(
            budget_s=size.pretrain_seconds, epochs=size.pretrain_epochs, seeds=size.seeds,
            lr_multipliers=[multipliers["bp"]], dbp_lr_multipliers=[multipliers["dbp"]],
            sweep_seeds=size.seeds[:1], threads=1, overrides=[*overrides, *shown], plots=True,
            optimizer="adamw")  # the method's own comparison: BP vs DBP with AdamW, at AdamW's sweep picks  # 1 thread: steady on a busy CPU
        results[name] = run_speedup_bench(data[name], config, settings, out / "pretrain" / name)
        loss_plot(results[name], out / f"loss_vs_time_{name}.png", title=f"BP vs DBP on the {name} set")
    return results


def finetune_all(out: Path, synthetic: dict, seg_data: Path, size: QuickstartSize) -> dict:
    """``bench finetune`` of every seed's wire-bond BP and DBP encoder on the labelled set."""
    from mae_dbp.bench.finetune import FinetuneSettings, run_finetune_bench

    print(f"\n== UperNet fine-tuning of every seed's BP and DBP wire-bond encoder ({size.seg_iters} iterations each) ==")
    return run_finetune_bench(synthetic, seg_data, out / "finetune", FinetuneSettings(iters=size.seg_iters, lr=size.seg_lr))


def run_quickstart(out: Path, size: QuickstartSize, force: bool = False, progress: bool | None = None) -> dict:
    """The whole pipeline; returns the numbers of the report (also in out/results.json).
    ``progress``: every run's ``log.progress`` (None: bars only on a terminal)."""
    from mae_dbp.quickstart_report import summarize, write_report
    from mae_dbp.run_dir import prepare_output

    out = Path(out)
    prepare_output(out, None, force)  # the quickstart owns its whole folder
    data = make_data(out, size)
    comparisons = compare_pretraining(out, data, size, progress)
    finetune = finetune_all(out, comparisons["synthetic"], data["segmentation"], size)
    results = summarize(comparisons, finetune)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = write_report(out, results, size)
    print(f"\nreport: {report}")
    return results
