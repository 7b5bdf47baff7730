"""``mae-dbp export RUN_DIR_OR_CHECKPOINT --out DIR [--format timm|mmseg|both] [--force]``.

A pretraining run exports its fused MAE encoder as a plain timm ViT (and mmseg backbone weights);
a classification run (``mae-dbp classify``) exports its fused classifier. A run directory exports
its ``best/`` checkpoint, or its ``last/`` when it has no ``best/`` yet (said in the output).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a run directory (its best/ checkpoint is used) or a checkpoint folder in one")
    parser.add_argument("--out", required=True, help="output folder for model.safetensors + config.json")
    parser.add_argument("--format", default="timm", choices=["timm", "mmseg", "both"],
                        help="pretraining runs; timm: safetensors + config.json; mmseg/both: also mmseg_backbone.pth")
    parser.add_argument("--force", action="store_true", help="overwrite existing export files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mae_dbp.errors import UserInputError
    from mae_dbp.export import export_classifier, export_encoder, run_kind
    from mae_dbp.run_dir import RunDir

    if run_kind(args.source) == "classify":
        if args.format != "timm":
            raise UserInputError("--format mmseg/both: only pretraining runs have an mmseg backbone export")
        meta = export_classifier(args.source, args.out, force=args.force)
        what, source, fused = f"{meta['arch']} classifier", meta["source"], "R fused into the weights"
    else:
        meta = export_encoder(args.source, args.out, fmt=args.format, force=args.force)
        info = meta["mae_dbp"]
        what, source = meta["architecture"], info["source"]
        fused = f"{len(info['fused_sites'])} DBP layers fused, max abs diff {info['fusion_max_abs_diff']:.2e}"
    best = RunDir(Path(source).parent).best
    note = "" if Path(source) == best else f" (no {best.name}: the run has not finished a validated epoch)"
    print(f"exported {what} from {source}{note} ({fused}) to {args.out}")
    return 0
