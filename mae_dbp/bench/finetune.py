"""``bench finetune``: does a DBP-pretrained encoder segment as well as a BP one?

For each seed of a ``bench speedup`` result (its ``--json``, run with ``--out`` so the run folders
were kept), the BP and the DBP run's best encoder is exported (:func:`mae_dbp.export.export_encoder`:
DBP fused, W <- W R, a plain timm ViT) and fine-tuned as the tiny UperNet
(``configs/segmentation/upernet_tiny_cpu.py`` through :func:`segmentation.runner.train`) on the
same labelled set, with the same iterations, lr and fine-tuning seed (the pretraining seed) for
both; which method goes first alternates by seed. Reported: mIoU (%) per seed, median (range) per
method and of DBP - BP, and a verdict that says "within noise" when the two methods' ranges
overlap or the per-seed sign of the difference is not the same in every seed.

The labelled set is an industrial-layout folder (``train/`` and ``val/`` with ``images/`` and
``masks/``, e.g. ``mae-dbp data synthetic``: 2-channel 16-bit wire-bond images); the speedup run's
encoder must take that many channels (photo runs, RGB, cannot be fine-tuned on it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mae_dbp.bench.compare import METHODS, median_range
from mae_dbp.bench.device import torch_threads
from mae_dbp.bench.report import fmt, markdown_table, range_cell
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import prepare_output

SEGMENT_CONFIG = "upernet_tiny_cpu.py"  # in the shipped configs/segmentation/


@dataclass
class FinetuneSettings:
    """``iters`` UperNet iterations per encoder (validated once, at the end) at lr ``lr`` (AdamW
    with layer decay, the config's warm-up + poly decay); ``config``: a segmentation config path or
    the name of a shipped one; ``threads``: torch CPU threads while fine-tuning (None: unchanged;
    1, as ``bench speedup``: steady on a busy machine, where two threads can take twice as long)."""

    iters: int = 100
    lr: float = 3e-3
    config: str = SEGMENT_CONFIG
    threads: int | None = 1


def run_folders(speedup: dict) -> list[dict]:
    """[{"seed", "bp": run folder, "dbp": run folder}] of a ``bench speedup`` result."""
    root = speedup.get("settings", {}).get("out_dir")
    if not root:
        raise UserInputError("bench finetune: the bench speedup result kept no run folders (run it with --out DIR)")
    return [{"seed": r["seed"], **{m: Path(root) / r[f"{m}_run"] for m in METHODS}} for r in speedup["runs"]]


def labelled_channels(seg_data: Path) -> int:
    """Channels of the labelled set's first training image (``train/images``)."""
    from mae_dbp.data.io import list_images, read_image

    images = list_images(seg_data / "train" / "images") if (seg_data / "train" / "images").is_dir() else []
    if not images or not (seg_data / "val" / "masks").is_dir():
        raise UserInputError(f"{seg_data}: expected a labelled set with train/images, train/masks, val/images and "
                             "val/masks (mae-dbp data synthetic --out DIR/train ...)")
    return int(read_image(images[0]).shape[0])


def check_channels(run_dir: Path, channels: int, seg_data: Path) -> None:
    """Refuse a pretraining run whose encoder does not take the labelled set's channel count."""
    from mae_dbp.run_dir import RunDir
    from mae_dbp.train.pretrain import PretrainConfig

    in_chans = RunDir(run_dir).read_config(PretrainConfig).model.in_chans
    if in_chans != channels:
        raise UserInputError(f"bench finetune: {run_dir} encodes {in_chans}-channel images but the labelled set {seg_data} "
                             f"has {channels}-channel images; fine-tune a speedup run pretrained on {channels}-channel data "
                             "(e.g. the quickstart's wire-bond runs)")


def finetune(run_dir: Path, work: Path, seg_data: Path, seed: int, s: FinetuneSettings) -> dict:
    """Export ``run_dir``'s encoder to ``work/export`` and fine-tune it in ``work/segment``; returns
    {"run", "mIoU", "per_class_iou"} (percent)."""
    from mae_dbp.config import resolve_config_path
    from mae_dbp.export import export_encoder
    from segmentation.runner import train

    export_encoder(run_dir, work / "export")
    config = resolve_config_path(s.config, "segmentation")
    options = {"data_root": str(seg_data), "pretrained_export": str(work / "export"), "randomness.seed": seed,
               "train_cfg.max_iters": s.iters, "train_cfg.val_interval": s.iters,
               "optim_wrapper.optimizer.lr": s.lr, "log_level": "WARNING"}
    record = train(config, work / "segment", options)
    return {"run": str(run_dir), "mIoU": record.get("mIoU"), "per_class_iou": record.get("per_class_iou", {})}


def verdict(runs: list[dict], summary: dict) -> str:
    """Plain words: DBP's mIoU against BP's, "within noise" unless every seed and the ranges agree."""
    diffs = [r["difference"] for r in runs]
    n, middle = len(diffs), summary["difference"]["median"]
    bp, dbp = summary["bp_mIoU"], summary["dbp_mIoU"]
    said = f"DBP - BP mIoU {middle:+.2f} points (median of {n} seed{'s' * (n > 1)})"
    if n < 2:
        return f"{said}: one seed, no claim"
    reasons = []
    if all(d == 0 for d in diffs):
        reasons.append("no seed shows a difference")
    elif not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        reasons.append("the sign of the difference differs between seeds")
    if not (dbp["min"] > bp["max"] or bp["min"] > dbp["max"]):
        reasons.append("the two methods' ranges overlap")
    if reasons:
        return f"within noise: {said}, but {' and '.join(reasons)}"
    return f"{said}: {'DBP' if middle > 0 else 'BP'} higher in all {n} seeds, the ranges do not overlap"


def run_finetune_bench(speedup: dict, seg_data: str | Path, out_dir: str | Path,
                       settings: FinetuneSettings | None = None, force: bool = False) -> dict:
    """Fine-tune every seed's BP and DBP encoder (see the module docstring); work folders
    ``out_dir/{method}-seed{seed}``. Returns {"settings", "runs", "summary", "verdict"}."""
    s, seg_data, out = settings or FinetuneSettings(), Path(seg_data), Path(out_dir)
    if s.iters < 1:
        raise UserInputError(f"bench finetune: --iters must be >= 1, got {s.iters}")
    folders = run_folders(speedup)
    channels = labelled_channels(seg_data)
    for pair in folders:
        for method in METHODS:
            check_channels(pair[method], channels, seg_data)
    prepare_output(out, None, force)  # the bench owns its whole folder
    runs = []
    with torch_threads(s.threads):
        for index, pair in enumerate(folders):
            seed, scores = pair["seed"], {}
            for method in METHODS if index % 2 == 0 else METHODS[::-1]:
                print(f"== bench finetune: {method.upper()} seed {seed} ({s.iters} iterations) ==", flush=True)
                scores[method] = finetune(pair[method], out / f"{method}-seed{seed}", seg_data, seed, s)
            runs.append({"seed": seed, **{f"{m}_mIoU": scores[m]["mIoU"] for m in METHODS},
                         "difference": scores["dbp"]["mIoU"] - scores["bp"]["mIoU"],
                         **{f"{m}_run": scores[m]["run"] for m in METHODS},
                         **{f"{m}_per_class_iou": scores[m]["per_class_iou"] for m in METHODS}})
    summary = {key: median_range([r[key] for r in runs]) for key in ("bp_mIoU", "dbp_mIoU", "difference")}
    return {"settings": {**asdict(s), "seg_data": str(seg_data), "out_dir": str(out)}, "runs": runs,
            "summary": summary, "verdict": verdict(runs, summary)}


def markdown_report(result: dict) -> str:
    """mIoU per seed, median (range) per method and of the difference, and the verdict."""
    rows = [[r["seed"], fmt(r["bp_mIoU"], ".2f"), fmt(r["dbp_mIoU"], ".2f"), fmt(r["difference"], "+.2f")]
            for r in result["runs"]]
    s = result["summary"]
    rows.append(["median (range)", range_cell(s["bp_mIoU"], ".2f"), range_cell(s["dbp_mIoU"], ".2f"),
                 range_cell(s["difference"], "+.2f")])
    table = markdown_table(["seed", "BP mIoU (%)", "DBP mIoU (%)", "DBP - BP"], rows)
    return f"{table}\n\n{result['verdict']}.\n"


def add_arguments(sub) -> None:
    """Register ``finetune`` on the ``mae-dbp bench`` sub-parsers (``--json`` is added by the caller)."""
    p = sub.add_parser("finetune", help="UperNet fine-tuning of a bench speedup run's BP and DBP encoders: mIoU per seed")
    p.set_defaults(_bench_run="mae_dbp.bench.finetune:run")
    p.add_argument("--speedup", type=Path, required=True,
                   help="the --json of a bench speedup run made with --out (its run folders are fine-tuned)")
    p.add_argument("--seg-data", type=Path, required=True,
                   help="labelled set with train/ and val/ (images/, masks/), e.g. mae-dbp data synthetic")
    p.add_argument("--out", type=Path, required=True, help="folder for the exports and fine-tuning runs")
    p.add_argument("--iters", type=int, default=100, help="UperNet iterations per encoder (default 100)")
    p.add_argument("--lr", type=float, default=3e-3, help="fine-tuning lr (default 3e-3)")
    p.add_argument("--seg-config", default=SEGMENT_CONFIG, help=f"segmentation config (default the shipped {SEGMENT_CONFIG})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while fine-tuning (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown")


def run(args) -> dict:
    """``mae-dbp bench finetune``: fine-tunes, prints the table, writes --markdown."""
    import json

    if not args.speedup.is_file():
        raise UserInputError(f"{args.speedup}: no bench speedup result (the --json of mae-dbp bench speedup)")
    speedup = json.loads(args.speedup.read_text())
    result = run_finetune_bench(speedup, args.seg_data, args.out,
                                FinetuneSettings(iters=args.iters, lr=args.lr, config=args.seg_config,
                                                 threads=args.threads), force=args.force)
    text = markdown_report(result)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return result
