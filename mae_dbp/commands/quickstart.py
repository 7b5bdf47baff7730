"""``mae-dbp quickstart [--out DIR] [--force]``: BP vs DBP end to end on built-in data
(the job: :mod:`mae_dbp.quickstart`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mae_dbp.quickstart import QuickstartSize, run_quickstart


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="quickstart_out", help="output folder (default: quickstart_out)")
    parser.add_argument("--force", action="store_true", help="replace an existing quickstart folder")
    parser.add_argument("--pretrain-seconds", type=float, help="wall-clock budget per pretraining run")
    parser.add_argument("--seg-iters", type=int, help="UperNet fine-tuning iterations per encoder (default 40)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (by default they show only on a terminal)")



def run(args: argparse.Namespace) -> int:
    size = QuickstartSize()
    if args.pretrain_seconds:
        size.pretrain_seconds = args.pretrain_seconds
    if args.seg_iters:
        size.seg_iters = args.seg_iters
    run_quickstart(Path(args.out), size, force=args.force, progress=False if args.no_progress else None)
    return 0
