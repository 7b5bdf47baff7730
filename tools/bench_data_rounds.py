"""The industrial data-path table: ``mae-dbp bench data`` for every data path,
in rounds (each round runs every row once), so slow drifts of a shared machine hit all rows alike.

    python tools/bench_data_rounds.py DATA_DIR [--rounds 3] [--images 1024] [--out OUT] [--rows pyr crop ...]

DATA_DIR holds 2048² 2-channel 16-bit images and their derived copies, made by ``mae-dbp data
synthetic --size 2048`` / ``data stats`` / ``data tile`` / ``data pyramid`` / ``data shard``: ``wb2048``,
``wb2048_stats.json``, ``wb2048_tiled``, ``wb2048_pyr``, the shards and ``wb512``. Prints the markdown
table (median and range over rounds) and writes every run's JSON under OUT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIG = "configs/pretrain/industrial_vit_base_dbp.yaml"
ROWS = {  # key: (label, overrides relative to DATA_DIR as {d})
    "whole": ("2048² folder, whole image (before)", ["data.root={d}/wb2048/images", "data.crop_first=false"]),
    "crop": ("2048² folder, crop-first", ["data.root={d}/wb2048/images"]),
    "crop4": ("2048² folder, crop-first, crops_per_image 4", ["data.root={d}/wb2048/images", "data.crops_per_image=4"]),
    "tiled": ("2048² tiled TIFF (256² tiles), crop-first", ["data.root={d}/wb2048_tiled/images"]),
    "pyr": ("**2048² pyramid, level_gap 1.0 (default)**", ["data.root={d}/wb2048_pyr/images"]),
    "pyr4": ("2048² pyramid, level_gap 1.0, crops_per_image 4", ["data.root={d}/wb2048_pyr/images", "data.crops_per_image=4"]),
    "pyr15": ("2048² pyramid, level_gap 1.5", ["data.root={d}/wb2048_pyr/images", "data.level_gap=1.5"]),
    "pyr2": ("2048² pyramid, level_gap 2.0", ["data.root={d}/wb2048_pyr/images", "data.level_gap=2.0"]),
    "shards": ("2048² shards (whole images)", ["data.root=null", "data.shards={d}/wb2048_shards"]),
    "shards4": ("2048² shards, crops_per_image 4", ["data.root=null", "data.shards={d}/wb2048_shards", "data.crops_per_image=4"]),
    "pshards": ("2048² pyramid shards", ["data.root=null", "data.shards={d}/wb2048_pyr_shards"]),
    "pshards4": ("2048² pyramid shards, crops_per_image 4",
                 ["data.root=null", "data.shards={d}/wb2048_pyr_shards", "data.crops_per_image=4"]),
    "t512whole": ("512 px tiles, whole image", ["data.root={d}/wb512/train/images", "data.crop_first=false"]),
    "t512crop": ("512 px tiles, crop-first", ["data.root={d}/wb512/train/images"]),
    "t512shards": ("512 px tile shards", ["data.root=null", "data.shards={d}/wb512_shards"]),
    "t512shards4": ("512 px tile shards, crops_per_image 4",
                    ["data.root=null", "data.shards={d}/wb512_shards", "data.crops_per_image=4"]),
}


def table(results: dict[str, list[dict]]) -> str:
    """The rows' markdown table: median (min - max) over rounds of each rate."""
    from mae_dbp.bench.compare import median_range
    from mae_dbp.bench.report import markdown_table, range_cell

    def cell(runs: list[dict], value, spec: str = ".0f") -> str:
        return range_cell(median_range([value(r) for r in runs]), spec)

    rows = []
    for key, runs in results.items():
        first, levels = runs[0], runs[0].get("levels") or {}
        level = f"{levels['share_from_levels']:.0%}" if levels else ""
        if "rms_over_std_median" in levels:
            level += f"; {levels['rms_over_std_median']:.2%}, {levels['rms_over_std_max']:.2%}"
        rows.append([ROWS[key][0], f"{first['mb_per_sample']:.2f} / {first['page_mb_per_sample']:.2f}",
                     cell(runs, lambda r: r["cpu_ms_per_sample"], ".2f"), cell(runs, lambda r: r["one_core_images_per_s"]),
                     cell(runs, lambda r: r["workers"]["1"]["median"]), cell(runs, lambda r: r["workers"]["2"]["median"]),
                     level])
    return markdown_table(["data path", "MB read / pages per sample", "CPU ms / sample", "img/s, one core",
                           "img/s, 1 worker", "img/s, 2 workers", "crops from a level; RMS / std (median, max)"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("bench_data_rounds"))
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args()
    common = [f"data.stats={args.data}/wb2048_stats.json", "data.skip_bad=false", "train.batch_size=32",
              "train.effective_batch=32", f"data.val_root={args.data}/wb512/val/images"]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {key: [] for key in args.rows}
    for round_ in range(1, args.rounds + 1):
        for key in args.rows:
            out = args.out / f"{key}.r{round_}.json"
            overrides = [o.format(d=args.data) for o in ROWS[key][1]]
            command = ["mae-dbp", "bench", "data", "--config", CONFIG, "--workers", "1", "2", "--images",
                       str(args.images), "--repeats", "1", "--steps", "0", *common, *overrides, "--json", str(out)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            results[key].append(json.loads(out.read_text()))
        print(f"round {round_} of {args.rounds} done", file=sys.stderr)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
