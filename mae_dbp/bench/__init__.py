"""``mae-dbp bench ...``: benchmarks that print DBP vs BP ratios measured in one process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = sub.add_parser("decor", help="DBP layer overhead: Linear(768, 2304) and the ViT-B patch-embed conv")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per contender (default 5)")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")


def _write(result: dict, path: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.bench == "decor":
        from mae_dbp.bench.decor_layers import run_decor_bench

        _write(run_decor_bench(repeats=args.repeats), args.json)
    return 0
