"""``mae-dbp quickstart [--out DIR] [--force]``: what DBP buys, end to end, on this machine.

On built-in synthetic 2-channel 16-bit wire-bonding data: pretrain the same small MAE with BP and
with DBP (same data, seed and wall-clock budget), export both encoders (DBP fused), fine-tune a tiny
UperNet from each, then print a table and write ``report.md`` with the plots.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

PRETRAIN_CONFIG = "tiny_cpu_{method}.yaml"
SEGMENT_CONFIG = "upernet_tiny_cpu.py"


@dataclass
class QuickstartSize:
    """How much work the quickstart does (the default fits in about 10 minutes on 2 CPU cores)."""

    pretrain_images: int = 400
    seg_train_images: int = 96
    seg_val_images: int = 24
    image_size: int = 64
    pretrain_seconds: float = 75.0  # wall-clock budget per method
    pretrain_epochs: int = 200  # the schedule's length; the budget usually ends the run first
    seg_iters: int = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="quickstart_out", help="output folder (default: quickstart_out)")
    parser.add_argument("--force", action="store_true", help="replace an existing quickstart folder")
    parser.add_argument("--pretrain-seconds", type=float, help="wall-clock budget per pretraining run")
    parser.add_argument("--seg-iters", type=int, help="UperNet fine-tuning iterations per export")


def config_dir() -> Path:
    """The shipped configs (package data ``mae_dbp.configs``; ``configs/`` in a source checkout)."""
    from mae_dbp.config import shipped_configs

    return shipped_configs()


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} already exists and is not empty (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def make_data(out: Path, size: QuickstartSize) -> tuple[Path, Path]:
    """Pretraining images and a labelled train/val segmentation set, all synthetic and seeded."""
    from data_tools.stats import compute_stats
    from data_tools.synthetic import write_synthetic

    pretrain_dir = write_synthetic(out / "data" / "pretrain", size.pretrain_images, size.image_size, seed=0)
    seg_dir = out / "data" / "segmentation"
    write_synthetic(seg_dir / "train", size.seg_train_images, size.image_size, seed=1000)
    write_synthetic(seg_dir / "val", size.seg_val_images, size.image_size, seed=2000)
    compute_stats(pretrain_dir, pretrain_dir / "stats.json", progress=False)
    compute_stats(seg_dir / "train", seg_dir / "train" / "stats.json", progress=False)
    return pretrain_dir, seg_dir


def pretrain_both(out: Path, data: Path, size: QuickstartSize) -> dict[str, dict]:
    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig, pretrain

    runs = {}
    for method in ("bp", "dbp"):
        print(f"\n== pretraining with {method.upper()} for {size.pretrain_seconds:.0f} s of training ==")
        config = load_config(PretrainConfig, config_dir() / "pretrain" / PRETRAIN_CONFIG.format(method=method))
        config.data.root, config.data.stats = str(data), str(data / "stats.json")
        config.model.img_size = size.image_size
        config.train.epochs, config.train.max_train_seconds = size.pretrain_epochs, size.pretrain_seconds
        runs[method] = pretrain(config, out=out / "pretrain" / method)
    return runs


def export_both(out: Path) -> dict[str, Path]:
    from mae_dbp.export import export_encoder

    exports = {}
    for method in ("bp", "dbp"):
        exports[method] = out / "export" / method
        meta = export_encoder(out / "pretrain" / method, exports[method])
        print(f"exported {method.upper()} encoder ({len(meta['mae_dbp']['fused_sites'])} DBP layers fused, "
              f"max abs diff {meta['mae_dbp']['fusion_max_abs_diff']:.1e}) to {exports[method]}")
    return exports


def segment_both(out: Path, seg_data: Path, exports: dict[str, Path], size: QuickstartSize) -> dict[str, dict]:
    from segmentation.runner import train

    results = {}
    for method, export in exports.items():
        print(f"\n== UperNet fine-tuning from the {method.upper()} export ({size.seg_iters} iterations) ==")
        options = {"data_root": str(seg_data), "pretrained_export": str(export),
                   "train_cfg.max_iters": size.seg_iters, "train_cfg.val_interval": size.seg_iters,
                   "optim_wrapper.optimizer.lr": 3e-3, "log_level": "WARNING"}
        results[method] = train(config_dir() / "segmentation" / SEGMENT_CONFIG, out / "segment" / method, options)
    return results


def run_quickstart(out: Path, size: QuickstartSize, force: bool = False) -> dict:
    """The whole pipeline; returns the numbers of the final table (also in out/results.json)."""
    from mae_dbp.quickstart_report import summarize, write_report

    out = Path(out)
    prepare_out(out, force)
    pretrain_data, seg_data = make_data(out, size)
    runs = pretrain_both(out, pretrain_data, size)
    exports = export_both(out)
    seg = segment_both(out, seg_data, exports, size)
    results = summarize(out, runs, seg)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = write_report(out, results, size)
    print(f"\nreport: {report}")
    return results


def run(args: argparse.Namespace) -> int:
    size = QuickstartSize()
    if args.pretrain_seconds:
        size.pretrain_seconds = args.pretrain_seconds
    if args.seg_iters:
        size.seg_iters = args.seg_iters
    run_quickstart(Path(args.out), size, force=args.force)
    return 0
