"""``mae-dbp pretrain --config FILE [--out RUN_DIR] [--resume RUN_DIR] [section.key=value ...]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pretraining YAML (configs/pretrain/*.yaml); without it, the built-in ViT-B defaults")
    parser.add_argument("--out", help="run directory (default: log.dir/log.name, or the config name + time)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory from its last.pt")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. train.epochs=2 data.root=PATH decor.enabled=false")


def run(args: argparse.Namespace) -> int:
    from mae_dbp.train.pretrain import pretrain

    from mae_dbp.train.loop import process_state

    summary = pretrain(args.config, args.overrides, out=args.out, resume=args.resume)
    if process_state().is_main_process:
        print(f"best val loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch']} "
              f"after {summary['train_seconds_to_best']:.1f} s of training; {summary['kg_co2']:.2e} kg CO2")
    return 0
