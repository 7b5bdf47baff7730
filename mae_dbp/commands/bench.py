"""``mae-dbp bench ...``: benchmarks that print DBP vs BP ratios measured in one process.

    mae-dbp bench decor     [--repeats N] [--json PATH]   DBP layer overhead at ViT-B shapes
    mae-dbp bench pretrain  [--config F] [--steps N]      MAE training step, DBP vs BP
    mae-dbp bench inference [--config F] [--repeats N]    fused export vs plain timm ViT
    mae-dbp bench overhead  [--config F] [--steps N]      our BP MAE vs a straightforward MAE
    mae-dbp bench zoo       --data DIR [--budget S]       ConvNet / MLP: DBP time to BP's best accuracy
    mae-dbp bench speedup   --data DIR [--seeds ...]      MAE pretraining: DBP time to BP's best val loss
    mae-dbp bench finetune  --speedup JSON --seg-data DIR UperNet mIoU of a speedup run's BP and DBP encoders
    mae-dbp bench data      [--config F] [--workers 1 2]  training data path: images/s, MB read, vs the step
    mae-dbp bench all       [--json PATH] [--markdown PATH]
    mae-dbp bench report    [--check]                     docs/results.md and the README's table from docs/results/*.json

Every bench registers its sub-parser through ``add_arguments(sub)`` in its own module (listed in
:data:`BENCH_MODULES`) and sets ``_bench_run`` (``"module:function"``, imported only when run, so
``mae-dbp --help`` never imports torch); ``run(args)`` returns the result dict that ``--json``
(added here to every bench) receives. The four step benches and ``all`` measure in modules that
import torch at the top, so their parsers are registered here (:func:`_add_step_benches`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Callable

from mae_dbp.bench import device

TINY = "configs/pretrain/tiny_cpu_dbp.yaml"
# modules with an ``add_arguments(sub)`` registering one or more benches (light imports only)
BENCH_MODULES = ("mae_dbp.bench.zoo", "mae_dbp.bench.speedup", "mae_dbp.bench.finetune", "mae_dbp.bench.data_path",
                 "mae_dbp.bench.results")


def _add_step_benches(sub) -> None:
    """``decor``, ``pretrain``, ``inference``, ``overhead`` and ``all``: the step-time benches."""
    p = sub.add_parser("decor", help="DBP layer overhead per training step at ViT-B and small-batch shapes")
    p.set_defaults(_bench_run="mae_dbp.commands.bench:run_decor")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per contender (default 5)")
    p.add_argument("--update-every", type=int, default=1, help="R update every k steps (default 1)")
    p.add_argument("--shapes", nargs="+", default=None, help="subset of vitb_qkv vitb_fc1 mlp_1000 patch_embed")
    p.add_argument("--forms", nargs="+", default=["auto"], choices=["auto", "fused", "unfused"],
                   help="forms to time (default auto: the cost rule's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall-clock, or the process's CPU seconds (use with --threads 1 on a busy machine)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--variant", default="standard", help="decor variant (standard, gain, triangular, low_rank)")
    p.add_argument("--rank", type=int, default=16, help="rank of U, V for --variant low_rank (default 16)")
    p.add_argument("--micro-batches", type=int, default=1,
                   help="forward + backward passes accumulated per optimizer step (default 1; the ViT-B recipe: 16)")
    device.add_arguments(p)
    for name, text, count in (("pretrain", "MAE training step with DBP vs BP (same model, data, seed)", "steps"),
                              ("inference", "fused exported encoder vs the plain timm ViT", "repeats"),
                              ("overhead", "our MAE (BP mode) vs a straightforward timm MAE", "steps")):
        p = sub.add_parser(name, help=text)
        p.set_defaults(_bench_run=f"mae_dbp.commands.bench:run_{name}")
        p.add_argument("--config", default=TINY, help=f"pretraining YAML (default {TINY})")
        p.add_argument(f"--{count}", type=int, default=20, help=f"timed {count} per contender (default 20)")
        p.add_argument("--batch-size", type=int, help="override train.batch_size")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        if name == "pretrain":
            p.add_argument("--optimizer", default=None, help="train.optimizer of both contenders (default: the config's)")
        if name != "overhead":
            device.add_arguments(p)
    p = sub.add_parser("all", help="decor, pretrain, inference and overhead in one process")
    p.set_defaults(_bench_run="mae_dbp.commands.bench:run_all")
    p.add_argument("--config", default=TINY, help=f"pretraining YAML for the model benchmarks (default {TINY})")
    p.add_argument("--steps", type=int, default=20, help="timed steps per contender (default 20)")
    p.add_argument("--markdown", type=Path, help="also write the results as a markdown table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mae-dbp bench`` sub-parsers: the step benches, then each module of :data:`BENCH_MODULES`."""
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _add_step_benches(sub)
    for module in BENCH_MODULES:
        importlib.import_module(module).add_arguments(sub)
    for p in sub.choices.values():
        p.add_argument("--json", type=Path, help="write the results to this JSON file")


def markdown(results: dict) -> str:
    """The ``bench all`` results as a markdown table."""
    rows = [
        ("DBP layer, Linear(768, 2304), 12,544 tokens", "wrapped / plain step time", results["decor"]["linear_ratio"]),
        ("DBP layer, patch-embed conv, 128 x 224²", "wrapped / plain step time", results["decor"]["conv_ratio"]),
        ("MAE training step", "DBP / BP step time", results["pretrain"]["overhead_ratio"]),
        ("fused encoder inference", "fused / plain timm time", results["inference"]["ratio"]),
        ("fused encoder vs unfused W(Rx)", "max abs diff", results["inference"]["max_abs_diff_vs_unfused"]),
        ("framework overhead (BP)", "mae-dbp MAE / straightforward MAE", results["overhead"]["framework_ratio"]),
    ]
    lines = ["| benchmark | measure | value |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {v:.3g} |" for a, b, v in rows]
    return "\n".join(lines) + "\n"


def run_stages(stages: dict[str, Callable[[], dict]]) -> dict:
    """Run each named benchmark in turn with one progress line on stderr before and after it
    (``bench all`` takes minutes; stdout stays the results only)."""
    results, start = {}, time.perf_counter()
    for number, (name, stage) in enumerate(stages.items(), 1):
        print(f"bench all: [{number}/{len(stages)}] {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        results[name] = stage()
        print(f"bench all: [{number}/{len(stages)}] {name} done in {time.perf_counter() - began:.0f} s "
              f"({time.perf_counter() - start:.0f} s in all)", file=sys.stderr, flush=True)
    return results


def _config(args: argparse.Namespace):
    from mae_dbp.config import load_config, resolve_config_path
    from mae_dbp.train.pretrain import PretrainConfig

    optimizer = getattr(args, "optimizer", None)
    overrides = [*getattr(args, "overrides", []), *([f"train.optimizer={optimizer}"] if optimizer else [])]
    return load_config(PretrainConfig, resolve_config_path(args.config, "pretrain"), overrides)


def run_decor(args: argparse.Namespace) -> dict:
    """``bench decor``: the layer benchmark, its table printed."""
    from mae_dbp.bench.decor_layers import SHAPES, markdown_table, run_decor_bench
    from mae_dbp.errors import UserInputError

    unknown = [s for s in args.shapes or [] if s not in SHAPES]
    if unknown or args.update_every < 1 or args.micro_batches < 1:
        raise UserInputError(f"bench decor: --shapes must be among {', '.join(SHAPES)}, --update-every and "
                             "--micro-batches >= 1")
    from mae_dbp.bench.device import torch_threads

    with torch_threads(args.threads):  # restored after: a calling process (a test run) keeps its own
        result = run_decor_bench(repeats=args.repeats, update_every=args.update_every, shapes=args.shapes,
                                 forms=tuple(args.forms), clock=args.clock, variant=args.variant, rank=args.rank,
                                 micro_batches=args.micro_batches, device=args.device, dtype=args.dtype,
                                 compile=args.compile)
    print(markdown_table(result))
    return result


def run_pretrain(args: argparse.Namespace) -> dict:
    from mae_dbp.bench.pretrain_step import markdown_table, run_pretrain_bench

    result = run_pretrain_bench(_config(args), args.steps, args.batch_size, args.device, args.dtype, args.compile,
                                config_name=Path(args.config).name)
    print(markdown_table(result))
    return result


def run_inference(args: argparse.Namespace) -> dict:
    from mae_dbp.bench.inference import run_inference_bench

    return run_inference_bench(_config(args), args.repeats, args.batch_size or 32, args.device, args.dtype,
                               args.compile)


def run_overhead(args: argparse.Namespace) -> dict:
    from mae_dbp.bench.overhead import run_overhead_bench

    return run_overhead_bench(_config(args), args.steps, args.batch_size)


def run_all(args: argparse.Namespace) -> dict:
    """``bench all``: the four step benches in one process, their markdown table printed."""
    from mae_dbp.bench.decor_layers import run_decor_bench
    from mae_dbp.bench.inference import run_inference_bench
    from mae_dbp.bench.overhead import run_overhead_bench
    from mae_dbp.bench.pretrain_step import run_pretrain_bench

    config = _config(args)
    result = run_stages({
        "decor": run_decor_bench,
        "pretrain": lambda: run_pretrain_bench(config, args.steps),
        "inference": lambda: run_inference_bench(config, args.steps),
        "overhead": lambda: run_overhead_bench(config, args.steps),
    })
    table = markdown(result)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return result


def write_json(result: dict, path: Path | None) -> None:
    """Print the result as JSON; also write it to ``path`` when given."""
    print(json.dumps(result, indent=2))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    """``mae-dbp bench NAME``: run the chosen bench, print (and with ``--json`` write) its result."""
    module, function = args._bench_run.split(":")
    write_json(getattr(importlib.import_module(module), function)(args), args.json)
    return 0
