"""``bench zoo``: BP vs DBP on a small real image folder, each run to the same wall-clock budget.

For each architecture and seed, a BP run and a DBP run (``mae_dbp.train.classify.classify``, so the
shared loop ``fit``; emissions off, guard off, constant lr) train for ``budget_s`` seconds of
training time (validation excluded). From BP's metrics: its best validation top-1 ``A`` and the
training seconds ``T_bp`` when it first reached it; from DBP's: the training seconds ``T_dbp`` when
its top-1 first reached ``A``. The headline is ``T_dbp / T_bp`` (below 1: DBP gets to BP's best
sooner; null: DBP never reached it within the budget). Accuracy is measured once per epoch, so
times have epoch resolution. Also reported: the same ratio in epochs (learning per step, free of
DBP's per-step cost), the seconds-per-step ratio (DBP's overhead), and both methods' seconds to
fixed accuracy levels (``targets``; less noisy than one run's best).

With several main lrs (``lrs``), both methods first run at each of them on the sweep seeds and each
keeps the lr with the highest median best top-1 (:func:`mae_dbp.bench.sweep.lr_sweep`, the same
sweep for both); the pairs then compare each method at its own lr (sweep runs are reused). The
protocol, the pair numbers, the medians and the run cache are those of ``bench speedup``
(:mod:`mae_dbp.bench.compare`), with top-1 accuracy (higher is better) as the metric.

The data folder is ``DIR/train/<class>/*`` + ``DIR/val/<class>/*`` (``data_tools.digits``).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from mae_dbp.bench.compare import METHODS, TOP1, add_device_arguments, cached_run, compare_pair, device_entry
from mae_dbp.bench.compare import device_fields, run_pairs, summarize
from mae_dbp.bench.device import torch_threads
from mae_dbp.bench.report import fmt, markdown_table as table
from mae_dbp.data.io import list_images, read_image
from mae_dbp.errors import UserInputError

ARCH_MODELS: dict[str, dict] = {
    "convnet": {"arch": "convnet", "conv_channels": [32, 64], "conv_kernel": 5},
    "mlp": {"arch": "mlp", "mlp_hidden": [1000, 1000, 1000, 1000]},
    "resnet18": {"arch": "resnet18"},
}


def _train_until_diverged(classify, config, run_dir: Path, clock: Callable[[], float] = time.perf_counter) -> int | None:
    """Train one run; if its loss turns non-finite (Adam on a memorised small set can blow up late,
    BP and DBP alike; the guard is off here), the run ends there and its finished epochs count.
    Returns the last finished epoch of a diverged run, None for a run that ended normally."""
    try:
        classify(config, out=run_dir, clock=clock)
        return None
    except FloatingPointError:
        from mae_dbp.run_dir import RunDir
        from mae_dbp.train.records import read_csv

        if not RunDir(run_dir).metrics.is_file():
            raise
        return int(read_csv(RunDir(run_dir).metrics)[-1]["epoch"])


def _classify(config, run_dir: Path, clock: Callable[[], float]) -> dict:
    from mae_dbp.train.classify import classify

    return {"diverged_after_epoch": _train_until_diverged(classify, config, run_dir, clock)}


def _runner(root: Path, arch: str, model: dict, data, train, decor, clock: str):
    """``run(method, lr, seed)`` -> the :func:`~mae_dbp.bench.compare.cached_run` record of one
    training run (with ``diverged_after_epoch``); run folders ``{arch}-{method}-lr{lr}-seed{seed}``."""
    from mae_dbp.config import LogConfig
    from mae_dbp.models.zoo import ZooModelConfig
    from mae_dbp.train.classify import ClassifyConfig

    def run(method: str, lr: float, seed: int) -> dict:
        steps = dataclasses.replace(train, seed=seed, base_lr=lr * 256 / train.batch_size, min_lr=lr)
        config = ClassifyConfig(model=ZooModelConfig(**model, **ARCH_MODELS[arch]), data=copy.deepcopy(data),
                                log=LogConfig(emissions=False, plots=False), train=steps,
                                decor=dataclasses.replace(decor, enabled=method == "dbp", seed=seed))
        return cached_run(config, root / f"{arch}-{method}-lr{lr:g}-seed{seed}", _classify, clock)

    return run


def _compare_arch(run, root: Path, arch: str, seeds: Sequence[int], lrs: Sequence[float],
                  sweep_seeds: Sequence[int] | None, targets: Sequence[float]) -> tuple[list[dict], dict | None]:
    """The lr sweep (if several lrs) and one BP / DBP pair per seed at each method's lr
    (:func:`~mae_dbp.bench.compare.run_pairs`), with each pair's accuracy plot."""
    from mae_dbp.train import plots

    sweep, results = run_pairs(run, {"bp": list(lrs), "dbp": list(lrs)}, seeds, sweep_seeds, TOP1)
    chosen = {m: sweep[m]["chosen"] if sweep else lrs[0] for m in METHODS}
    pairs = []
    for seed in seeds:
        runs = {m: results[(m, seed)] for m in METHODS}
        plots.accuracy_curves({"BP": runs["bp"]["rows"], "DBP": runs["dbp"]["rows"]}, root / f"{arch}-seed{seed}.png")
        pairs.append({"seed": seed, "bp_lr": chosen["bp"], "dbp_lr": chosen["dbp"],
                      **compare_pair(runs["bp"], runs["dbp"], TOP1, targets),
                      **{f"{m}_diverged_after_epoch": r.get("diverged_after_epoch") for m, r in runs.items()}})
    return pairs, sweep


SUMMARY_KEYS = ("time_fraction", "epoch_fraction", "step_time_ratio", "bp_best_top1", "dbp_best_top1")


def run_zoo_bench(data_dir: str | Path, budget_s: float, archs: Sequence[str] = ("convnet", "mlp"),
                  seeds: Sequence[int] = (0,), batch_size: int = 256, lrs: Sequence[float] = (1e-3,),
                  sweep_seeds: Sequence[int] | None = None, decor_lr: float = 1e-3,
                  kappa: float = 0.0, threads: int | None = None, out_dir: str | Path | None = None,
                  targets: Sequence[float] = (0.9, 0.95, 0.97, 0.98), variant: str = "standard", rank: int = 16,
                  sites: Sequence[str] = ("*",), sample_frac: float = 0.1, clock: str = "wall", device: str = "auto",
                  dtype: str = "float32", compile: bool = False) -> dict:
    """BP vs DBP per architecture and seed to ``budget_s`` training seconds each; returns the results.

    ``lrs`` (W, Adam; several: a sweep on ``sweep_seeds``, default ``seeds``, see the module
    docstring) and ``decor_lr`` (R) are per-step values at any ``batch_size``; ``threads`` sets
    torch's CPU threads for all runs (default: unchanged); ``targets``: fixed top-1 levels (fractions)
    whose first-reach seconds are reported for both methods; ``variant`` / ``rank`` / ``sites``: DBP's
    variant and the layers it decorrelates (module-name globs); ``kappa`` / ``sample_frac``: the R
    rule's whitening weight and the fraction of each batch's rows per R update; ``clock``: "wall" or
    "cpu" (the process's CPU seconds); ``device`` / ``dtype`` / ``compile``: every run's
    ``train.device`` / bf16 autocast / ``train.compile``. Runs go to ``out_dir`` (default: a temporary folder, deleted;
    a finished run there with the same training is reused). Result: {"settings", "runs": {arch:
    [pair per seed]}, "sweep": {arch: lr sweep or null}, "summary": {arch: {key: median, min, max
    over seeds, a miss counted as +inf}}}.
    """
    from data_tools.stats import compute_stats
    from mae_dbp.config import DecorConfig, GuardConfig
    from mae_dbp.train.classify import ClassifyDataConfig, ClassifyTrainConfig

    data_dir = Path(data_dir)
    if not (data_dir / "train").is_dir() or not (data_dir / "val").is_dir():
        raise UserInputError(f"{data_dir}: expected train/<class>/ and val/<class>/ folders (mae-dbp data digits)")
    if sweep_seeds and len(lrs) < 2:
        raise UserInputError(f"bench zoo: --sweep-seeds needs several --lrs to sweep, got --lrs {' '.join(map(str, lrs))}")
    sweep_seeds = list(sweep_seeds or seeds) if len(lrs) > 1 else None
    unknown = [a for a in archs if a not in ARCH_MODELS]
    if unknown:
        raise UserInputError(f"bench zoo: unknown arch {unknown[0]!r} (known: {', '.join(ARCH_MODELS)})")
    first = read_image(list_images(data_dir / "train")[0])
    stats = compute_stats(data_dir / "train", progress=False)
    placed = device_entry(device, dtype, compile)  # no GPU: refused
    model = {"in_chans": int(first.shape[0]), "img_size": int(first.shape[-1])}
    data = ClassifyDataConfig(root=str(data_dir / "train"), val_root=str(data_dir / "val"), cache=True,
                              mean=list(stats["mean"]), std=list(stats["std"]))
    train = ClassifyTrainConfig(batch_size=batch_size, effective_batch=batch_size, epochs=100000, warmup_epochs=0,
                                weight_decay=0.0, betas=[0.9, 0.999], max_train_seconds=budget_s,
                                guard=GuardConfig(enabled=False), **device_fields(device, dtype, compile))
    decor = DecorConfig(sites=list(sites), lr=decor_lr, kappa=kappa, variant=variant, rank=rank, sample_frac=sample_frac)
    temporary = tempfile.TemporaryDirectory(prefix="bench-zoo-") if out_dir is None else None
    root = Path(temporary.name if temporary else out_dir)
    runs, sweeps = {}, {}
    try:
        with torch_threads(threads) as used_threads:
            for arch in archs:
                run = _runner(root, arch, model, data, train, decor, clock)
                runs[arch], sweeps[arch] = _compare_arch(run, root, arch, seeds, lrs, sweep_seeds, targets)
    finally:
        if temporary:
            temporary.cleanup()
    summary = {arch: summarize(pairs, SUMMARY_KEYS) for arch, pairs in runs.items()}
    settings = {"data": str(data_dir), "budget_s": budget_s, "archs": list(archs), "seeds": list(seeds),
                "batch_size": batch_size, "lrs": list(lrs), "sweep_seeds": sweep_seeds,
                "decor_lr": decor_lr, "kappa": kappa, "sample_frac": sample_frac, "variant": variant,
                "rank": rank if variant == "low_rank" else None, "sites": list(sites),
                "threads": used_threads, "targets": list(targets), "clock": clock, "out_dir": None if temporary else str(root)}
    return {"settings": settings, "device": {**placed, "threads": used_threads}, "sweep": sweeps, "runs": runs, "summary": summary}


def markdown_table(result: dict) -> str:
    """A :func:`run_zoo_bench` result as markdown: the per-seed pairs, the sweeps, times to the targets."""
    rows = []
    for arch, pairs in result["runs"].items():
        for p in pairs:
            diverged = ", ".join(f"{m.upper()} after epoch {p[f'{m}_diverged_after_epoch']}" for m in METHODS
                                 if p.get(f"{m}_diverged_after_epoch") is not None) or "no"
            rows.append([arch, p["seed"], f"{p['bp_lr']:g} / {p['dbp_lr']:g}", f"{p['bp_best_top1']:.4f}",
                         f"{p['bp_seconds_to_best']:.1f}", fmt(p["dbp_seconds_to_bp_best"], ".1f"),
                         fmt(p["time_fraction"], ".2f"), fmt(p["epoch_fraction"], ".2f"), f"{p['dbp_best_top1']:.4f}",
                         f"{p['step_time_ratio']:.2f}", diverged])
    parts = [table(["arch", "seed", "lr BP / DBP", "BP best top-1", "BP s to best", "DBP s to BP's best", "time fraction",
                    "epoch fraction", "DBP best top-1", "DBP / BP s per step", "diverged"], rows)]
    for arch, sweep in (result.get("sweep") or {}).items():
        if sweep:
            parts += ["", f"{arch} lr sweep (median best top-1 over seeds {result['settings']['sweep_seeds']}): "
                      + "; ".join(f"{m.upper()} " + ", ".join(f"{lr:g}: {v:.4f}" for lr, v in zip(e["lrs"], e["best_top1"]))
                                  + f" -> {e['chosen']:g}" for m, e in sweep.items())]
    targets = result["settings"].get("targets") or []
    if targets:
        rows = [[arch, p["seed"], *[f"{fmt(c['bp_seconds'], '.1f')} ({fmt(c['bp_epoch'], '.0f')}) / "
                                    f"{fmt(c['dbp_seconds'], '.1f')} ({fmt(c['dbp_epoch'], '.0f')})" for c in p["to_level"].values()]]
                for arch, pairs in result["runs"].items() for p in pairs]
        parts += ["", table(["arch", "seed", *[f"to {100 * t:g}%: BP / DBP s (epoch)" for t in targets]], rows)]
    return "\n".join(parts)


def add_arguments(sub) -> None:
    """Register ``zoo`` on the ``mae-dbp bench`` sub-parsers (``sub``: argparse subparsers action).

    ``--json`` is left to the caller (``mae_dbp.bench`` adds it to every bench)."""
    p = sub.add_parser("zoo", help="BP vs DBP ConvNet / MLP on a small image folder to a fixed time budget")
    p.set_defaults(_bench_run="mae_dbp.bench.zoo:run")
    p.add_argument("--data", type=Path, required=True, help="folder with train/<class>/ and val/<class>/ (mae-dbp data digits)")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per run (default 60)")
    p.add_argument("--archs", nargs="+", default=["convnet", "mlp"], choices=sorted(ARCH_MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="one BP / DBP pair per seed (default 0)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="keep the run directories and plots here")
    p.add_argument("--variant", default="standard", help="DBP variant (standard, gain, triangular, low_rank)")
    p.add_argument("--rank", type=int, default=16, help="rank of U, V for --variant low_rank (default 16)")
    p.add_argument("--sites", nargs="+", default=["*"], help="module-name globs DBP decorrelates (default: every layer)")
    p.add_argument("--decor-lr", type=float, default=1e-3, help="R learning rate (default 1e-3)")
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-3],
                   help="main (Adam) lr of both methods (default 1e-3); several: the same sweep for both, each "
                        "method then runs at its lr with the highest median best top-1 over --sweep-seeds")
    p.add_argument("--sweep-seeds", nargs="+", type=int, default=None, help="seeds of the lr sweep (default: --seeds)")
    p.add_argument("--kappa", type=float, default=0.0, help="R rule's whitening weight (default 0: decorrelate only)")
    p.add_argument("--sample-frac", type=float, default=0.1, help="fraction of each batch's rows per R update (default 0.1)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time runs by wall-clock (default) or by this process's CPU seconds (robust to other jobs)")
    add_device_arguments(p)


def run(args) -> dict:
    """``mae-dbp bench zoo``: runs the bench, prints the table, returns the result (the caller writes --json)."""
    result = run_zoo_bench(args.data, args.budget, archs=args.archs, seeds=args.seeds, batch_size=args.batch_size,
                           threads=args.threads, out_dir=args.out, variant=args.variant, rank=args.rank,
                           sites=args.sites, decor_lr=args.decor_lr, lrs=args.lrs, sweep_seeds=args.sweep_seeds, kappa=args.kappa,
                           sample_frac=args.sample_frac, clock=args.clock, device=args.device, dtype=args.dtype,
                           compile=args.compile)
    print(markdown_table(result))
    return result
