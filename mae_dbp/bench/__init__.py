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
    p = sub.add_parser("pretrain", help="MAE training step with DBP vs BP (same model, data, seed)")
    p.add_argument("--config", default="configs/pretrain/tiny_cpu_dbp.yaml", help="pretraining YAML")
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (default 20)")
    p.add_argument("--batch-size", type=int, help="override train.batch_size")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def _write(result: dict, path: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.bench == "decor":
        from mae_dbp.bench.decor_layers import run_decor_bench

        _write(run_decor_bench(repeats=args.repeats), args.json)
    elif args.bench == "pretrain":
        from mae_dbp.bench.pretrain_step import run_pretrain_bench

        _write(run_pretrain_bench(args.config, args.steps, args.overrides, args.batch_size), args.json)
    return 0
