"""``mae-dbp data``: synthetic data, subsets, validation, tiling and statistics of image folders.

    mae-dbp data synthetic --out DIR --num N --size PX [--seed S]
    mae-dbp data validate DIR [--channels C] [--bit-depth B] [--size PX] [--min-size PX]
    mae-dbp data tile DIR --out DIR --tile PX [--overlap PX] [--val-fraction F] [--seed S]
    mae-dbp data stats DIR --out FILE.json
    mae-dbp data shard DIR --out DIR [--tile PX] [--overlap PX] [--shard-size MB] [--seed S]
    mae-dbp data pyramid DIR --out DIR [--min-side PX]
    mae-dbp data subset imagenet|ade20k SRC --out DIR --fraction F [--seed S] [--mode symlink|list]
    mae-dbp data digits --out DIR [--size PX] [--val-fraction F] [--seed S]
    mae-dbp data photos --out DIR [--size PX] [--train-crops N] [--val-crops N] [--val-fraction F] [--scale F]

Every writing tool refuses to replace an existing output unless ``--force``.
"""

from __future__ import annotations

import argparse

from data_tools import digits, photos
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``data`` tools as nested sub-commands."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="TOOL")

    p = sub.add_parser("synthetic", help="write synthetic 2-channel 16-bit wire-bond images with masks")
    p.add_argument("--out", type=Path, required=True, help="output folder (images/, masks/, classes.yaml)")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--size", type=int, default=128, help="side length in px (default 128)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("validate", help="check images, masks and classes.yaml of a folder")
    p.add_argument("dir", type=Path)
    p.add_argument("--channels", type=int, default=None, help="required channel count")
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=None, help="required bit depth")
    p.add_argument("--size", type=int, default=None, help="required side length in px (square)")
    p.add_argument("--min-size", type=int, default=None,
                   help="warn about images smaller than this (px; default: the most common size)")

    p = sub.add_parser("tile", help="cut images and masks into tiles, split train/val by source image")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tile", type=int, required=True, help="tile side in px")
    p.add_argument("--overlap", type=int, default=0, help="overlap of neighbouring tiles in px")
    p.add_argument("--val-fraction", type=float, default=0.1, help="fraction of source images for val")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("shard", help="WebDataset tar shards of the raw images (or tiles) with a manifest")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder (shard-*.tar, manifest.json)")
    p.add_argument("--tile", type=int, default=None, help="cut tiles of this side in px (default: whole images)")
    p.add_argument("--overlap", type=int, default=0, help="overlap of neighbouring tiles in px")
    p.add_argument("--shard-size", type=float, default=512.0, help="MB of pixels per shard (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample order across shards")

    p = sub.add_parser("pyramid", help="pyramidal TIFF copies (reduced-resolution levels): crops of large "
                                       "images read from a coarser level")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder (images/, and masks/, classes.yaml if any)")
    p.add_argument("--min-side", type=int, default=224,
                   help="add levels while their shorter side is at least this many px (default 224)")

    p = sub.add_parser("stats", help="per-channel mean/std in raw pixel units, as JSON")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write (e.g. DIR/stats.json)")

    p = sub.add_parser("subset", help="deterministic fraction of an ImageNet- or ADE20K-layout folder")
    p.add_argument("layout", choices=("imagenet", "ade20k"))
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fraction", type=float, required=True, help="e.g. 0.1 for the DBP-MAE recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("symlink", "list"), default="symlink")
    p.add_argument("--subset-val", action="store_true", help="also subset the validation split")

    digits.add_arguments(sub)  # brings its own --force
    photos.add_arguments(sub)  # brings its own --force
    for name in ("synthetic", "tile", "shard", "pyramid", "stats", "subset"):
        sub.choices[name].add_argument("--force", action="store_true", help="replace an existing output")
    for p in sub.choices.values():
        p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _synthetic(args: argparse.Namespace) -> int:
    from data_tools.synthetic import write_synthetic

    out = write_synthetic(args.out, args.num, args.size, seed=args.seed, progress=not args.no_progress, force=args.force)
    print(f"wrote {args.num} synthetic {args.size}x{args.size} images to {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from data_tools.validate import validate

    report = validate(args.dir, channels=args.channels, bit_depth=args.bit_depth, size=args.size,
                      progress=not args.no_progress, min_size=args.min_size)
    print(report.summary())
    for line in report.problem_lines() + report.warning_lines():
        print(line, file=sys.stderr)
    return 0 if report.ok else 1


def _tile(args: argparse.Namespace) -> int:
    from data_tools.tile import split_warning, tile

    counts = tile(args.dir, args.out, args.tile, overlap=args.overlap, val_fraction=args.val_fraction,
                  seed=args.seed, force=args.force, progress=not args.no_progress)
    print(f"wrote {counts['train']} train and {counts['val']} val tiles to {args.out}")
    warning = split_warning(counts, args.val_fraction)
    if warning:
        print(f"mae-dbp: warning: {warning}", file=sys.stderr)
    return 0


def _shard(args: argparse.Namespace) -> int:
    from data_tools.shard import write_shards

    manifest = write_shards(args.dir, args.out, tile=args.tile, overlap=args.overlap, shard_mb=args.shard_size,
                            seed=args.seed, force=args.force, progress=not args.no_progress)
    print(f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards to {args.out}")
    return 0


def _pyramid(args: argparse.Namespace) -> int:
    from data_tools.pyramid import write_pyramids

    counts = write_pyramids(args.dir, args.out, min_side=args.min_side, force=args.force, progress=not args.no_progress)
    print(f"wrote {counts['images']} pyramidal TIFFs ({counts['levels']} reduced levels each for the first) to {args.out}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from data_tools.stats import compute_stats

    result = compute_stats(args.dir, args.out, progress=not args.no_progress, force=args.force)
    print(json.dumps({k: result[k] for k in ("mean", "std", "channels", "dtype", "num_images")}))
    return 0


def _subset(args: argparse.Namespace) -> int:
    from data_tools.subsets import ade20k_subset, imagenet_subset

    build = imagenet_subset if args.layout == "imagenet" else ade20k_subset
    counts = build(args.src, args.out, args.fraction, seed=args.seed, mode=args.mode,
                   subset_val=args.subset_val, force=args.force)
    print(f"{args.layout} subset in {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen data tool; 0 on success, 1 when validation finds problems."""
    tools = {"synthetic": _synthetic, "validate": _validate, "tile": _tile, "shard": _shard, "pyramid": _pyramid,
             "stats": _stats, "subset": _subset, "digits": digits.run, "photos": photos.run}
    return tools[args.data_command](args)
