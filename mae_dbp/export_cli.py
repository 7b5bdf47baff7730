"""``mae-dbp export RUN_DIR_OR_CHECKPOINT --out DIR [--format timm|mmseg|both] [--force]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run directory (its best.pt is used) or a checkpoint file in one")
    parser.add_argument("--out", required=True, help="output folder for model.safetensors + config.json")
    parser.add_argument("--format", default="timm", choices=["timm", "mmseg", "both"],
                        help="timm: safetensors + config.json; mmseg/both: also mmseg_backbone.pth")
    parser.add_argument("--force", action="store_true", help="overwrite existing export files")


def run(args: argparse.Namespace) -> int:
    from mae_dbp.export import export_encoder

    meta = export_encoder(args.source, args.out, fmt=args.format, force=args.force)
    info = meta["mae_dbp"]
    print(f"exported {meta['architecture']} ({len(info['fused_sites'])} DBP layers fused, "
          f"max abs diff {info['fusion_max_abs_diff']:.2e}) to {args.out}")
    return 0
