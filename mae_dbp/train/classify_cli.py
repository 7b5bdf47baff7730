"""``mae-dbp classify --config FILE [--out RUN_DIR] [--resume RUN_DIR] [section.key=value ...]``.

Export a finished run as a plain fused model: ``mae-dbp classify --export RUN_DIR --out DIR [--force]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="classification YAML (configs/zoo/*.yaml)")
    parser.add_argument("--out", help="run directory (default: log.dir/log.name, or the config name + time); "
                                      "with --export: the folder for model.safetensors + config.json")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory from its last.pt")
    parser.add_argument("--export", metavar="RUN_DIR", help="fuse R into RUN_DIR/best.pt and write a plain model to --out")
    parser.add_argument("--force", action="store_true", help="with --export: replace existing output files")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. model.arch=mlp data.root=PATH decor.enabled=false")


def run(args: argparse.Namespace) -> int:
    from mae_dbp.errors import UserInputError

    if args.export:
        if not args.out:
            raise UserInputError("--export RUN_DIR needs --out DIR (where to write the plain model)")
        if args.config or args.resume or args.overrides:
            raise UserInputError("--export takes only --out and --force")
        from mae_dbp.train.classify import export_classifier

        out = export_classifier(args.export, args.out, force=args.force)
        print(f"wrote {out / 'model.safetensors'} and {out / 'config.json'} (R fused into the weights)")
        return 0
    if not args.config and not args.resume:
        raise UserInputError("give --config FILE (or --resume RUN_DIR, or --export RUN_DIR --out DIR)")
    from mae_dbp.train.classify import ClassifyConfig, classify
    from mae_dbp.train.run_dir import cli_config

    config = cli_config(ClassifyConfig, args.config, args.resume, args.overrides)
    stem = Path(args.config).stem if args.config else "classify"
    summary = classify(config, out=args.out, resume=args.resume, stem=stem)
    target = summary.get("train_seconds_to_target")
    reached = f"; target {summary['target_accuracy']:.3f} reached after {target:.1f} s" if target is not None else ""
    print(f"best val top-1 {summary.get('best_val_top1', float('nan')):.4f} at epoch {summary.get('best_top1_epoch')} "
          f"after {summary.get('train_seconds_to_best_top1', float('nan')):.1f} s of training{reached}; "
          f"{summary['kg_co2']:.2e} kg CO2")
    return 0
