"""``mae-dbp classify --config FILE [--out RUN_DIR] [--resume RUN_DIR] [section.key=value ...]``.

Export a finished run as a plain fused model with ``mae-dbp export RUN_DIR --out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mae_dbp.commands.pretrain import add_run_arguments, progress_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "classification YAML (configs/zoo/*.yaml)", "model.arch=mlp")


def run(args: argparse.Namespace) -> int:
    from mae_dbp.errors import UserInputError
    from mae_dbp.train.classify import ClassifyConfig, classify
    from mae_dbp.process import process_state
    from mae_dbp.train.job import cli_config

    if not args.config and not args.resume:
        raise UserInputError("give --config FILE (or --resume RUN_DIR)")
    config = cli_config(ClassifyConfig, args.config, args.resume, progress_overrides(args))
    summary = classify(config, out=args.out, resume=args.resume, stem=Path(args.config).stem if args.config else "classify")
    if not process_state().is_main_process:
        return 0
    target = summary.get("train_seconds_to_target")
    reached = f"; target {summary['target_accuracy']:.3f} reached after {target:.1f} s" if target is not None else ""
    print(f"best val top-1 {summary.get('best_val_top1', float('nan')):.4f} at epoch {summary.get('best_top1_epoch')} "
          f"after {summary.get('train_seconds_to_best_top1', float('nan')):.1f} s of training{reached}; "
          f"{summary['kg_co2']:.2e} kg CO2")
    return 0
