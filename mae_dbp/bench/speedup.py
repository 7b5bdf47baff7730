"""``bench speedup``: does DBP-MAE reach BP-MAE's best validation loss in less wall-clock time?

Protocol. The same model, data (an image folder with ``train/`` and ``val/``, e.g. ``mae-dbp data
photos``), seeds, schedule (``epochs`` of warm-up + cosine) and wall-clock cap for both methods,
through the public :func:`mae_dbp.train.pretrain.pretrain`. Each method first sweeps its main lr
over the same multipliers of ``base_lr`` on the sweep seeds and keeps the one with the lowest best
validation loss (median over sweep seeds); then one BP and one DBP run per seed at those lrs, the
order of the two alternating from seed to seed. Runs whose directory already holds a finished run
with the same settings are reused (``--out``), so DBP variants can be measured against one BP set.

From each BP / DBP pair (validation loss is measured once per epoch, so times have epoch
resolution): BP's best loss ``L`` and its training seconds ``T_bp`` (validation excluded) when it
first reached it; DBP's seconds and epochs to first reach ``L`` as fractions of BP's (below 1:
DBP is faster; null: never within the budget), seconds of both to fixed loss thresholds, both
best losses, DBP's kg CO2 to ``L`` against BP's, and each run's process CPU seconds per wall
second (a contention gauge: ``threads`` on a quiet machine, less when other jobs take the cores).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from mae_dbp.bench.sweep import lr_sweep
from mae_dbp.errors import UserInputError

METHODS = ("bp", "dbp")
PHOTO_CONFIG = "tiny_photos_dbp.yaml"  # in the shipped configs/pretrain/
BEST_LR_MULTIPLIERS = {"bp": 4.0, "dbp": 4.0}  # of train.base_lr 8e-3: each method's sweep pick (docs/benchmarks.md)


@dataclass
class SpeedupSettings:
    """What ``bench speedup`` runs. ``base_lr`` is ``train.base_lr`` (per 256 images); each method tries
    ``base_lr x`` each of its multipliers (``dbp_lr_multipliers`` None: the same as BP's, as the
    headline must; narrower only to screen variants). ``overrides`` apply to both methods,
    ``dbp_overrides`` to DBP only (a variant). ``budget_s`` caps each run's training seconds;
    ``threads``: torch CPU threads (None: unchanged); ``thresholds`` None: median BP best x 1.10,
    1.05, 1.02; ``clock``: see :func:`training_clock`; ``plots``: each run's own PNGs."""

    budget_s: float = 300.0
    epochs: int = 14
    seeds: Sequence[int] = (0, 1, 2)
    base_lr: float = 8e-3
    lr_multipliers: Sequence[float] = (1.0, 2.0, 4.0)
    dbp_lr_multipliers: Sequence[float] | None = None
    sweep_seeds: Sequence[int] = (0,)
    threads: int | None = 1
    thresholds: Sequence[float] | None = None
    overrides: Sequence[str] = ()
    dbp_overrides: Sequence[str] = ()
    emissions: bool = True
    plots: bool = False
    clock: str = "wall"


def run_overrides(data_dir: Path, method: str, lr: float, seed: int, settings: SpeedupSettings) -> list[str]:
    """The config overrides of one run (the only place the bench speaks the config's language)."""
    stats = data_dir / "stats.json"
    return [
        f"data.root={data_dir / 'train'}", f"data.val_root={data_dir / 'val'}",
        *([f"data.stats={stats}"] if stats.is_file() else []),
        f"decor.enabled={method == 'dbp'}", f"train.base_lr={lr}", f"train.seed={seed}", f"decor.seed={seed}",
        f"train.epochs={settings.epochs}", f"train.max_train_seconds={settings.budget_s}", "train.guard.enabled=false",
        f"log.emissions={str(settings.emissions).lower()}", f"log.plots={str(settings.plots).lower()}",
        *(settings.dbp_overrides if method == "dbp" else ()), *settings.overrides,
    ]


def run_name(method: str, lr: float, seed: int, dbp_overrides: Sequence[str] = ()) -> str:
    """The run directory name of one bench run (DBP variants carry their overrides in it)."""
    variant = "-".join(o.replace("=", "").replace(".", "").replace("*", "x").replace(" ", "") for o in dbp_overrides)
    name = f"{method}{'-' + variant if method == 'dbp' and variant else ''}-lr{lr:g}-seed{seed}"
    return name.replace("/", "_").replace('"', "").replace("'", "")[:150]


@contextlib.contextmanager
def training_clock(kind: str):
    """``wall``: the loop's own ``time.perf_counter``; ``cpu``: the same calls return this process's
    CPU seconds (all its threads), so a run's ``train_seconds`` count compute it got, not time it
    waited for cores other jobs held. Run one process per core with 1 torch thread for it to match
    wall-clock on a quiet machine."""
    if kind == "wall":
        yield
        return
    if kind != "cpu":
        raise UserInputError(f"--clock must be wall or cpu, got {kind!r}")
    wall_clock = time.perf_counter
    time.perf_counter = time.process_time
    try:
        yield
    finally:
        time.perf_counter = wall_clock


def training_key(config) -> dict:
    """What decides a run's training: the resolved config without ``log`` (where results go) and,
    for BP, without the ``decor`` settings it ignores (so DBP's defaults can change under cached BP runs)."""
    from mae_dbp.config import to_dict

    data = to_dict(config)
    data.pop("log", None)
    if not data.get("decor", {}).get("enabled", True):
        data["decor"] = {"enabled": False}
    return data


def _train(config: str | None, overrides: list[str], run_dir: Path, clock: str = "wall") -> dict:
    """One pretraining run, or the finished run already in ``run_dir`` with the same resolved
    training config (:func:`training_key`) and clock."""
    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig, pretrain
    from mae_dbp.train.records import read_csv

    record = run_dir / "bench_run.json"
    resolved = load_config(PretrainConfig, config, overrides)
    key = training_key(resolved)
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("training") == key and old.get("clock") == clock:
            return old
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    wall, cpu = time.monotonic(), time.process_time()
    with training_clock(clock):
        summary = pretrain(resolved, out=run_dir)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    result = {"overrides": overrides, "clock": clock, "training": key, "rows": read_csv(run_dir / "metrics.csv"),
              "best_val_loss": summary["best_val_loss"], "wall_seconds": wall, "cpu_seconds": cpu,
              "cpu_per_wall": cpu / wall if wall > 0 else math.nan}
    from mae_dbp.files import atomic_write

    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))  # cache: never half-written
    return result


def first_reach(rows: list[dict], target: float) -> dict | None:
    """The first epoch row whose validation loss is at or below ``target`` (None: never)."""
    return next((r for r in rows if math.isfinite(r["val_loss"]) and r["val_loss"] <= target), None)


def compare_pair(bp: dict, dbp: dict, thresholds: Sequence[float] = ()) -> dict:
    """The bench numbers of one BP / DBP pair of :func:`_train` results (see the module docstring)."""
    bp_rows, dbp_rows = bp["rows"], dbp["rows"]
    best = min((r for r in bp_rows if math.isfinite(r["val_loss"])), key=lambda r: r["val_loss"])
    hit = first_reach(dbp_rows, best["val_loss"])

    def ratio(a, b):
        return a / b if a is not None and b else None

    def per_step(rows):
        return rows[-1]["train_seconds"] / max(1, rows[-1]["step"])

    return {
        "bp_best_val_loss": best["val_loss"], "dbp_best_val_loss": min(r["val_loss"] for r in dbp_rows),
        "bp_seconds_to_best": best["train_seconds"], "bp_epoch_of_best": best["epoch"],
        "dbp_seconds_to_bp_best": hit["train_seconds"] if hit else None,
        "dbp_epoch_to_bp_best": hit["epoch"] if hit else None,
        "time_fraction": ratio(hit and hit["train_seconds"], best["train_seconds"]),
        "epoch_fraction": ratio(hit and hit["epoch"], best["epoch"]),
        "bp_kg_co2_to_best": best.get("kg_co2"), "dbp_kg_co2_to_bp_best": hit.get("kg_co2") if hit else None,
        "co2_fraction": ratio(hit and hit.get("kg_co2"), best.get("kg_co2")),
        "step_time_ratio": per_step(dbp_rows) / per_step(bp_rows),
        "bp_cpu_per_wall": bp["cpu_per_wall"], "dbp_cpu_per_wall": dbp["cpu_per_wall"],
        "to_threshold": {f"{t:.4g}": {f"{m}_seconds": (first_reach(rows, t) or {}).get("train_seconds")
                                      for m, rows in (("bp", bp_rows), ("dbp", dbp_rows))} for t in thresholds},
    }


def median_range(values: Sequence[float | None]) -> dict:
    """Median, min and max with None ("never reached") counted as +inf, reported back as None."""
    ordered = [math.inf if v is None else float(v) for v in values]
    back = [None if math.isinf(v) else v for v in (statistics.median(ordered), min(ordered), max(ordered))]
    return {"median": back[0], "min": back[1], "max": back[2], "never": sum(v is None for v in values)}


SUMMARY_KEYS = ("time_fraction", "epoch_fraction", "co2_fraction", "step_time_ratio", "bp_best_val_loss",
                "dbp_best_val_loss", "bp_seconds_to_best", "dbp_seconds_to_bp_best", "bp_cpu_per_wall",
                "dbp_cpu_per_wall")


def default_thresholds(bp_best_losses: Sequence[float], factors: Sequence[float] = (1.10, 1.05, 1.02)) -> list[float]:
    """Fixed loss levels for every seed and method: the median of BP's best losses times ``factors``."""
    middle = statistics.median(bp_best_losses)
    return [round(middle * f, 4) for f in factors]


def shipped_config(name: str = PHOTO_CONFIG) -> str:
    """A YAML path as given, or else the shipped ``configs/pretrain/<name>``."""
    from mae_dbp.config import shipped_configs

    return name if Path(name).is_file() else str(shipped_configs() / "pretrain" / name)


def run_speedup_bench(data_dir: str | Path, config: str | None = PHOTO_CONFIG,
                      settings: SpeedupSettings | None = None, out_dir: str | Path | None = None) -> dict:
    """BP vs DBP pretraining (see the module docstring); returns {"settings", "sweep", "runs", "summary",
    "curves"}. Run directories go to ``out_dir`` (default: a temporary folder, deleted)."""
    import torch

    s = settings or SpeedupSettings()
    data_dir, config = Path(data_dir), shipped_config(config) if config else None
    if not (data_dir / "train").is_dir() or not (data_dir / "val").is_dir():
        raise UserInputError(f"{data_dir}: expected train/ and val/ image folders (mae-dbp data photos)")
    if len(s.seeds) < 1 or not s.lr_multipliers:
        raise UserInputError("bench speedup needs at least one seed and one lr multiplier")
    previous_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    temporary = tempfile.TemporaryDirectory(prefix="bench-speedup-") if out_dir is None else None
    root = Path(temporary.name if temporary else out_dir)

    def runner(method: str, lr: float, seed: int) -> dict:
        name = run_name(method, lr, seed, s.dbp_overrides)
        print(f"== bench speedup: {name} ==", flush=True)
        return _train(config, run_overrides(data_dir, method, lr, seed, s), root / name, s.clock)

    try:
        lrs = {"bp": [s.base_lr * m for m in s.lr_multipliers],
               "dbp": [s.base_lr * m for m in (s.dbp_lr_multipliers or s.lr_multipliers)]}
        sweep = lr_sweep(runner, lrs, s.sweep_seeds, key="best_val_loss")
        results = {}
        for index, seed in enumerate(s.seeds):
            order = METHODS if index % 2 == 0 else METHODS[::-1]  # spread slow drifts of the machine
            for method in order:
                results[(method, seed)] = runner(method, sweep[method]["chosen"], seed)
    finally:
        torch.set_num_threads(previous_threads)
        if temporary:
            temporary.cleanup()
    levels = list(s.thresholds) if s.thresholds else default_thresholds([
        min(r["val_loss"] for r in results[("bp", seed)]["rows"]) for seed in s.seeds])
    runs = [{"seed": seed, "bp_run": run_name("bp", sweep["bp"]["chosen"], seed),
             "dbp_run": run_name("dbp", sweep["dbp"]["chosen"], seed, s.dbp_overrides),
             **compare_pair(results[("bp", seed)], results[("dbp", seed)], levels)} for seed in s.seeds]
    curves = {m: {str(seed): [(r["train_seconds"], r["val_loss"]) for r in results[(m, seed)]["rows"]]
                  for seed in s.seeds} for m in METHODS}
    recorded = {**asdict(s), "threads": s.threads or previous_threads, "thresholds": levels,
                "dbp_lr_multipliers": list(s.dbp_lr_multipliers or s.lr_multipliers)}
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in recorded.items()}
    settings_out = {"data": str(data_dir), "config": config, **recorded, "out_dir": None if temporary else str(root)}
    summary = {key: median_range([r[key] for r in runs]) for key in SUMMARY_KEYS}
    return {"settings": settings_out, "sweep": sweep, "runs": runs, "summary": summary, "curves": curves}

def add_arguments(sub) -> None:
    """Register ``speedup`` on the ``mae-dbp bench`` sub-parsers (``--json`` is added by the caller)."""
    p = sub.add_parser("speedup", help="BP vs DBP MAE pretraining: DBP's wall-clock to BP's best val loss")
    p.set_defaults(_bench_run="mae_dbp.bench.speedup:run")
    p.add_argument("--data", type=Path, required=True, help="folder with train/ and val/ (mae-dbp data photos)")
    p.add_argument("--config", default=PHOTO_CONFIG, help=f"pretraining YAML (default: the shipped {PHOTO_CONFIG})")
    p.add_argument("--budget", type=float, default=300.0, help="wall-clock cap in training seconds per run (default 300)")
    p.add_argument("--epochs", type=int, default=14, help="schedule length in epochs (warm-up + cosine; default 14)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one BP / DBP pair per seed")
    p.add_argument("--base-lr", type=float, default=8e-3, help="train.base_lr the multipliers scale (default 8e-3)")
    p.add_argument("--lr-multipliers", nargs="+", type=float, default=[1.0, 2.0, 4.0],
                   help="lr sweep, the same for both methods (default 1 2 4)")
    p.add_argument("--dbp-lr-multipliers", nargs="+", type=float, default=None,
                   help="DBP's own sweep, only to screen variants (default: the same as --lr-multipliers)")
    p.add_argument("--sweep-seeds", nargs="+", type=int, default=[0], help="seeds of the lr sweep (default 0)")
    p.add_argument("--thresholds", nargs="+", type=float, default=None,
                   help="fixed val-loss levels (default: median BP best x 1.10, 1.05, 1.02)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    p.add_argument("--dbp", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for the DBP runs only")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time runs by wall-clock (default) or by this process's CPU seconds (robust to other jobs)")
    p.add_argument("--no-emissions", action="store_true", help="skip codecarbon (no kg CO2)")
    p.add_argument("--out", type=Path, default=None, help="keep (and reuse) the run directories here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as markdown")
    p.add_argument("--plot", type=Path, default=None, help="PNG of val loss vs training seconds")


def run(args) -> dict:
    """``mae-dbp bench speedup``: runs the bench, prints the tables, writes --markdown / --plot."""
    from mae_dbp.bench.speedup_report import loss_plot, markdown_table

    settings = SpeedupSettings(
        budget_s=args.budget, epochs=args.epochs, seeds=args.seeds, base_lr=args.base_lr, lr_multipliers=args.lr_multipliers,
        dbp_lr_multipliers=args.dbp_lr_multipliers, sweep_seeds=args.sweep_seeds, threads=args.threads,
        thresholds=args.thresholds, dbp_overrides=args.dbp, emissions=not args.no_emissions, clock=args.clock)
    result = run_speedup_bench(args.data, args.config, settings, args.out)
    table = markdown_table(result)
    print(table)
    for path, write in ((args.markdown, lambda p: p.write_text(table)), (args.plot, lambda p: loss_plot(result, p))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
    return result
