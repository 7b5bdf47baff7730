"""``mae-dbp pretrain --config FILE [--out RUN_DIR] [--resume RUN_DIR] [section.key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_arguments(parser: argparse.ArgumentParser, config_help: str, override_example: str) -> None:
    """The arguments of a training command (pretrain, classify): --config, --out, --resume, overrides."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--out", help="run directory (default: log.dir/log.name, or the config name + time)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory from its last/ checkpoint, with its own config.yaml")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (log.progress=false; by default bars show only on a terminal)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help=f"dotted config overrides, e.g. {override_example} data.root=PATH decor.enabled=false")


def progress_overrides(args: argparse.Namespace) -> list[str]:
    """The command's overrides, with ``log.progress=false`` for ``--no-progress``."""
    return [*args.overrides, *(["log.progress=false"] if getattr(args, "no_progress", False) else [])]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, "pretraining YAML (configs/pretrain/*.yaml); without it, the built-in ViT-B defaults",
                      "train.epochs=2")
    parser.add_argument("--smoke", action="store_true",
                        help="run the recipe small (tiny ViT at 64 px, batch 16, 2 epochs / 60 s, CPU-friendly) keeping its "
                             "data handling and method: a first run on your own folder (mae_dbp/train/smoke.py)")


def run(args: argparse.Namespace) -> int:
    from mae_dbp.train.pretrain import PretrainConfig, pretrain
    from mae_dbp.process import process_state
    from mae_dbp.train.job import cli_config

    stem = Path(args.config).stem if args.config else "pretrain"
    if getattr(args, "smoke", False):
        from mae_dbp.errors import UserInputError
        from mae_dbp.train.smoke import smoke_config

        if args.resume:
            raise UserInputError("--smoke and --resume exclude each other: a resumed smoke run keeps its own config.yaml")
        config, line = smoke_config(PretrainConfig, args.config, progress_overrides(args))
        stem = f"{stem}-smoke"
        if process_state().is_main_process:
            print(line, flush=True)
    else:
        config = cli_config(PretrainConfig, args.config, args.resume, progress_overrides(args))
    summary = pretrain(config, out=args.out, resume=args.resume, stem=stem)
    if process_state().is_main_process:
        print(f"best val loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch']} "
              f"after {summary['train_seconds_to_best']:.1f} s of training; {summary['kg_co2']:.2e} kg CO2")
    return 0
