"""``bench speedup``: does DBP-MAE reach BP-MAE's best validation loss in less training time?

Protocol (:mod:`mae_dbp.bench.compare`). The same model, data (an image folder with ``train/`` and
``val/``, e.g. ``mae-dbp data photos``), seeds, schedule (``epochs`` of warm-up + cosine) and
training-seconds cap for both methods, through the public :func:`mae_dbp.train.pretrain.pretrain`.
Each method sweeps its main lr over the same multipliers of ``base_lr`` on the sweep seeds and
keeps the one with the lowest best validation loss (median over sweep seeds); then one BP and one
DBP run per seed at those lrs, the order alternating from seed to seed. Runs whose folder already
holds a finished run of the same training and clock are reused (``--out``).

Horizons (:mod:`mae_dbp.bench.horizon`): ``short`` (default) runs ``--epochs``; ``long`` computes
the epochs for at least 1,500 optimizer steps on at least 4,000 training images.

From each BP / DBP pair, validation loss being measured once per epoch:

- epoch resolution (:func:`mae_dbp.bench.compare.compare_pair`): BP's best loss ``L`` and its
  training seconds when first reached; DBP's seconds and epochs to first reach ``L`` as fractions
  of BP's (below 1: DBP faster; null: never), seconds to fixed loss levels, both best losses,
  kg CO2 to ``L``, seconds per step, and each run's CPU seconds per wall second (a contention gauge);
- between epochs (:mod:`mae_dbp.bench.curves`, the best-so-far curves of both methods read
  identically, linear between validation points): the speed-up curve (for the loss BP reaches at
  25, 50, 75 and 100% of its training seconds, DBP's seconds to it as a fraction of BP's), the
  loss gap at equal training time, and the share of BP's improvement made by a third of its run.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from mae_dbp.bench import curves, horizon
from mae_dbp.bench.compare import METHODS, VAL_LOSS, add_device_arguments, cached_run, compare_pair, device_entry
from mae_dbp.bench.compare import device_fields, run_pairs, summarize
from mae_dbp.bench.compare import training_key  # noqa: F401  (the cache key, part of this bench's interface)
from mae_dbp.bench.device import torch_threads
from mae_dbp.bench.probe_reach import PROBE_KEYS, probe_pair
from mae_dbp.config import resolve_config_path
from mae_dbp.errors import UserInputError

PHOTO_CONFIG = "tiny_photos_dbp.yaml"  # in the shipped configs/pretrain/
BEST_LR_MULTIPLIERS = {"bp": 4.0, "dbp": 4.0}  # of train.base_lr 8e-3: each method's AdamW sweep pick on the short horizon
SUMMARY_KEYS = ("time_fraction", "epoch_fraction", "co2_fraction", "step_time_ratio", "bp_best_val_loss",
                "dbp_best_val_loss", "bp_seconds_to_best", "dbp_seconds_to_bp_best", "bp_cpu_per_wall",
                "dbp_cpu_per_wall", "bp_improvement_by_third")
PLATEAU_SHARE = 0.5  # BP "has left its early plateau" by a third of its run when it made this share of its improvement


@dataclass
class SpeedupSettings:
    """What ``bench speedup`` runs. ``base_lr`` is ``train.base_lr`` (per 256 images); each method tries
    ``base_lr x`` each of its multipliers (``dbp_lr_multipliers`` None: the same as BP's, as the
    headline must; narrower only to screen variants). ``overrides`` apply to both methods,
    ``dbp_overrides`` to DBP only (a variant). ``budget_s`` caps each run's training seconds (None:
    no cap); ``epochs`` None: the horizon's (short: 14; long: computed from the data);
    ``threads``: torch CPU threads (None: unchanged); ``thresholds`` None: median BP best x 1.10,
    1.05, 1.02; ``clock``: "wall" or "cpu" (the process's CPU seconds); ``plots``: each run's own PNGs;
    ``device`` / ``dtype`` / ``compile``: every run's ``train.device`` / bf16 autocast / ``train.compile``;
    ``optimizer``: both methods' ``train.optimizer`` (None: the config's)."""

    budget_s: float | None = 300.0
    epochs: int | None = horizon.SHORT_EPOCHS
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
    horizon: str = "short"
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    optimizer: str | None = None


def run_overrides(data_dir: Path, method: str, lr: float, seed: int, settings: SpeedupSettings,
                  optimizer: str | None = None) -> list[str]:
    """The config overrides of one run (the only place the bench speaks the config's language);
    ``optimizer`` None: ``settings.optimizer``, and with that None the config's own."""
    stats = data_dir / "stats.json"
    optimizer = optimizer or settings.optimizer
    return [*([f"train.optimizer={optimizer}"] if optimizer else []),
        f"data.root={data_dir / 'train'}", f"data.val_root={data_dir / 'val'}",
        *([f"data.stats={stats}"] if stats.is_file() else []),
        f"decor.enabled={method == 'dbp'}", f"train.base_lr={lr}", f"train.seed={seed}", f"decor.seed={seed}",
        *([f"train.epochs={settings.epochs}"] if settings.epochs else []),
        *([f"train.max_train_seconds={settings.budget_s}"] if settings.budget_s else []), "train.guard.enabled=false",
        f"log.emissions={str(settings.emissions).lower()}", f"log.plots={str(settings.plots).lower()}",
        *(f"train.{k}={str(v).lower() if isinstance(v, bool) else v}"
          for k, v in device_fields(settings.device, settings.dtype, settings.compile).items()),
        *(settings.dbp_overrides if method == "dbp" else ()), *settings.overrides,
    ]


def run_name(method: str, lr: float, seed: int, dbp_overrides: Sequence[str] = (), optimizer: str = "adamw") -> str:
    """The run directory name of one bench run (DBP variants carry their overrides in it; optimizers
    other than AdamW their name in front)."""
    variant = "-".join(o.replace("=", "").replace(".", "").replace("*", "x").replace(" ", "") for o in dbp_overrides)
    prefix = "" if optimizer == "adamw" else f"{optimizer}-"
    name = f"{prefix}{method}{'-' + variant if method == 'dbp' and variant else ''}-lr{lr:g}-seed{seed}"
    return name.replace("/", "_").replace('"', "").replace("'", "")[:150]


def _pretrain(config, run_dir: Path, clock) -> dict:
    from mae_dbp.train.pretrain import pretrain

    return {"best_val_loss": pretrain(config, out=run_dir, clock=clock)["best_val_loss"]}


def _train(config: str | None, overrides: list[str], run_dir: Path, clock: str = "wall") -> dict:
    """One pretraining run, or the finished run already in ``run_dir`` (:func:`~mae_dbp.bench.compare.cached_run`)."""
    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig

    resolved = load_config(PretrainConfig, config, overrides)
    return cached_run(resolved, run_dir, _pretrain, clock, extra={"overrides": overrides})


def default_thresholds(bp_best_losses: Sequence[float], factors: Sequence[float] = (1.10, 1.05, 1.02)) -> list[float]:
    """Fixed loss levels for every seed and method: the median of BP's best losses times ``factors``."""
    import statistics

    middle = statistics.median(bp_best_losses)
    return [round(middle * f, 4) for f in factors]


def plan_horizon(data_dir: Path, config: str | None, s: SpeedupSettings) -> dict:
    """The run length: {"horizon", "train_images", "steps_per_epoch", "epochs", "planned_steps"}.
    ``long``: refuses fewer than 4,000 training images, computes the epochs for >= 1,500 steps (an
    explicit ``epochs`` must not give fewer)."""
    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig

    if s.horizon not in horizon.HORIZONS:
        raise UserInputError(f"--horizon must be one of {', '.join(horizon.HORIZONS)}, got {s.horizon!r}")
    resolved = load_config(PretrainConfig, config, list(s.overrides))
    train_cfg, images = resolved.train, horizon.count_images(data_dir / "train")
    samples = images * resolved.data.crops_per_image  # an epoch reads every image once, k crops of each
    per_epoch = horizon.steps_per_epoch(samples, train_cfg)
    epochs = s.epochs or (horizon.SHORT_EPOCHS if s.horizon == "short" else None)
    if s.horizon == "long":
        horizon.check_long_data(data_dir / "train", images, horizon.LONG_MIN_IMAGES)
        least, _ = horizon.long_epochs(samples, train_cfg, horizon.LONG_MIN_STEPS)
        if epochs is not None and epochs < least:
            raise UserInputError(f"--horizon long: --epochs {epochs} gives {epochs * per_epoch} optimizer steps on "
                                 f"{samples} crops per epoch, fewer than {horizon.LONG_MIN_STEPS} (use {least} or leave it out)")
        epochs = epochs or least
    return {"horizon": s.horizon, "train_images": images, "steps_per_epoch": per_epoch, "epochs": epochs,
            "planned_steps": epochs * per_epoch}


def curve_of(record: dict) -> list[tuple[float, float]]:
    """(training seconds, validation loss) per epoch of a run record."""
    return [(r["train_seconds"], r["val_loss"]) for r in record["rows"]]


def arm_key(optimizer: str, method: str, race: bool) -> str:
    """An arm's name: "bp" / "dbp" in a one-optimizer bench; "adamw", "adamw+dbp", "muon", ... in a race."""
    return (optimizer if method == "bp" else f"{optimizer}+dbp") if race else method


def pair_numbers(results: dict, sweep: dict, s: SpeedupSettings, optimizer: str, race: bool,
                 levels: Sequence[float] | None = None) -> dict:
    """BP vs DBP with one optimizer: {"runs": per seed, "summary", "thresholds"} (module docstring)."""
    bp_arm, dbp_arm = arm_key(optimizer, "bp", race), arm_key(optimizer, "dbp", race)
    levels = list(levels) if levels else default_thresholds(
        [VAL_LOSS.best(results[(bp_arm, seed)]["rows"])["val_loss"] for seed in s.seeds])
    runs = []
    for seed in s.seeds:
        bp, dbp = results[(bp_arm, seed)], results[(dbp_arm, seed)]
        runs.append({"seed": seed, "bp_run": run_name("bp", sweep[bp_arm]["chosen"], seed, optimizer=optimizer),
                     "dbp_run": run_name("dbp", sweep[dbp_arm]["chosen"], seed, s.dbp_overrides, optimizer),
                     **compare_pair(bp, dbp, VAL_LOSS, levels),
                     "bp_steps": bp["rows"][-1]["step"], "dbp_steps": dbp["rows"][-1]["step"],
                     "speedup_curve": curves.speedup_curve(curve_of(bp), curve_of(dbp)),
                     "bp_improvement_by_third": curves.improvement_share(curve_of(bp)),
                     **probe_pair(bp["rows"], dbp["rows"])})
    summary = {**summarize(runs, SUMMARY_KEYS), "speedup_curve": curves.curve_summary(runs)}
    if all("bp_best_probe" in r for r in runs):  # the config has eval.probe: DBP judged on features too
        summary.update(summarize(runs, PROBE_KEYS), probe_metric=runs[0]["probe_metric"])
    return {"runs": runs, "summary": summary, "thresholds": levels}


def run_speedup_bench(data_dir: str | Path, config: str | None = PHOTO_CONFIG,
                      settings: SpeedupSettings | None = None, out_dir: str | Path | None = None,
                      optimizers: Sequence[str] | None = None) -> dict:
    """BP vs DBP pretraining (see the module docstring); returns {"settings", "horizon", "sweep", "runs",
    "summary", "curves"}. Run directories go to ``out_dir`` (default: a temporary folder, deleted).

    ``optimizers`` (two or more): a race of every optimizer with and without DBP, each arm swept
    and seeded alike (:mod:`mae_dbp.bench.race`); the result then also holds "race" (the arms
    against the best baseline) and "pairs" (BP vs DBP per optimizer); "runs" / "summary" are the
    first optimizer's pair."""
    import dataclasses

    from mae_dbp.optim.factory import check_name

    from mae_dbp.config import load_config
    from mae_dbp.train.pretrain import PretrainConfig

    s = settings or SpeedupSettings()
    data_dir, config = Path(data_dir), str(resolve_config_path(config, "pretrain")) if config else None
    own = s.optimizer or load_config(PretrainConfig, config, list(s.overrides)).train.optimizer
    optimizers = [check_name(o, "--optimizer") for o in (optimizers or [own])]
    race = len(optimizers) > 1
    s = dataclasses.replace(s, optimizer=optimizers[0])
    if not (data_dir / "train").is_dir() or not (data_dir / "val").is_dir():
        raise UserInputError(f"{data_dir}: expected train/ and val/ image folders (mae-dbp data photos)")
    if len(s.seeds) < 1 or not s.lr_multipliers:
        raise UserInputError("bench speedup needs at least one seed and one lr multiplier")
    device = device_entry(s.device, s.dtype, s.compile)  # no GPU: refused
    plan = plan_horizon(data_dir, config, s)
    s = dataclasses.replace(s, epochs=plan["epochs"])
    temporary = tempfile.TemporaryDirectory(prefix="bench-speedup-") if out_dir is None else None
    root = Path(temporary.name if temporary else out_dir)
    arms = {arm_key(o, m, race): (o, m) for o in optimizers for m in METHODS}

    def runner(arm: str, lr: float, seed: int) -> dict:
        optimizer, method = arms[arm]
        name = run_name(method, lr, seed, s.dbp_overrides, optimizer)
        print(f"== bench speedup: {name} ==", flush=True)
        return _train(config, run_overrides(data_dir, method, lr, seed, s, optimizer), root / name, s.clock)

    multipliers = {"bp": s.lr_multipliers, "dbp": s.dbp_lr_multipliers or s.lr_multipliers}
    lrs = {arm: [s.base_lr * m for m in multipliers[method]] for arm, (_, method) in arms.items()}
    try:
        with torch_threads(s.threads) as threads:
            sweep, results = run_pairs(runner, lrs, s.seeds, s.sweep_seeds, VAL_LOSS)
    finally:
        if temporary:
            temporary.cleanup()
    pairs = {o: pair_numbers(results, sweep, s, o, race, s.thresholds) for o in optimizers}
    first = pairs[optimizers[0]]
    recorded = {**asdict(s), "threads": threads, "thresholds": first["thresholds"],
                "dbp_lr_multipliers": list(s.dbp_lr_multipliers or s.lr_multipliers), "optimizers": optimizers}
    recorded = {k: list(v) if isinstance(v, tuple) else v for k, v in recorded.items()}
    settings_out = {"data": str(data_dir), "config": config, **recorded, "out_dir": None if temporary else str(root)}
    share = first["summary"]["bp_improvement_by_third"]["median"]
    plan["bp_left_plateau_by_third"] = None if share is None else share >= PLATEAU_SHARE
    plan["runs_cut_short"] = [f"{arm}-seed{seed}" for (arm, seed), record in results.items()
                              if record["rows"][-1]["step"] < plan["planned_steps"]]
    curves_out = {arm: {str(seed): curve_of(results[(arm, seed)]) for seed in s.seeds} for arm in arms}
    out = {"settings": settings_out, "device": {**device, "threads": threads}, "horizon": plan, "sweep": sweep,
           "runs": first["runs"], "summary": first["summary"], "curves": curves_out}
    if race:
        from mae_dbp.bench.race import race_summary

        out["pairs"] = {o: {"summary": p["summary"], "runs": p["runs"]} for o, p in pairs.items()}
        out["race"] = race_summary(results, sweep, arms, s.seeds)
    return out


def add_arguments(sub) -> None:
    """Register ``speedup`` on the ``mae-dbp bench`` sub-parsers (``--json`` is added by the caller)."""
    p = sub.add_parser("speedup", help="BP vs DBP MAE pretraining: DBP's training time to BP's best val loss")
    p.set_defaults(_bench_run="mae_dbp.bench.speedup:run")
    p.add_argument("--data", type=Path, required=True, help="folder with train/ and val/ (mae-dbp data photos)")
    p.add_argument("--config", default=PHOTO_CONFIG, help=f"pretraining YAML (default: the shipped {PHOTO_CONFIG})")
    p.add_argument("--horizon", choices=horizon.HORIZONS, default="short",
                   help="short (default): --epochs as given; long: >= 1,500 optimizer steps on >= 4,000 training "
                        "images, the epochs computed from the data and the config's effective batch")
    p.add_argument("--budget", type=float, default=None,
                   help="cap in training seconds per run (default: 300 for --horizon short, none for long)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"schedule length in epochs (warm-up + cosine; default {horizon.SHORT_EPOCHS}, or computed for long)")
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
    p.add_argument("--optimizer", default=None, help="train.optimizer of BP and DBP (default: the config's; any name "
                   "of timm's factory, or mud)")
    p.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                   help="a race: every optimizer with and without DBP, same sweep and seeds, one table against the "
                        "best baseline (e.g. --optimizers adamw muon)")
    p.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time runs by wall-clock (default) or by this process's CPU seconds (robust to other jobs)")
    p.add_argument("--no-emissions", action="store_true", help="skip codecarbon (no kg CO2)")
    add_device_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="keep (and reuse) the run directories here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as markdown")
    p.add_argument("--plot", type=Path, default=None, help="PNG of val loss vs training seconds")
    p.add_argument("--curve-plot", type=Path, default=None,
                   help="PNG of the speed-up curve and the loss gap at equal training time")
    p.add_argument("--race-plot", type=Path, default=None, help="with --optimizers: PNG of every arm's loss vs steps "
                   "and vs seconds")


def settings_from_args(args) -> SpeedupSettings:
    """The :class:`SpeedupSettings` of ``mae-dbp bench speedup`` arguments."""
    budget = args.budget if args.budget is not None else (300.0 if args.horizon == "short" else None)
    return SpeedupSettings(
        budget_s=budget, epochs=args.epochs, seeds=args.seeds, base_lr=args.base_lr, lr_multipliers=args.lr_multipliers,
        dbp_lr_multipliers=args.dbp_lr_multipliers, sweep_seeds=args.sweep_seeds, threads=args.threads,
        thresholds=args.thresholds, dbp_overrides=args.dbp, emissions=not args.no_emissions, clock=args.clock,
        horizon=args.horizon, device=args.device, dtype=args.dtype, compile=args.compile, optimizer=args.optimizer,
        overrides=args.overrides)


def run(args) -> dict:
    """``mae-dbp bench speedup``: runs the bench, prints the tables, writes --markdown / --plot / --curve-plot."""
    from mae_dbp.bench.speedup_report import curve_plot, loss_plot, markdown_report

    result = run_speedup_bench(args.data, args.config, settings_from_args(args), args.out, args.optimizers)
    text = markdown_report(result)
    if "race" in result:
        from mae_dbp.bench.race import markdown_race, race_plot

        text = markdown_race(result) + "\n" + f"BP vs DBP with {result['settings']['optimizer']}:\n\n" + text
        if args.race_plot is not None:
            race_plot(result, args.race_plot)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.plot is not None and "race" not in result:
        loss_plot(result, args.plot)
    if args.curve_plot is not None:
        curve_plot(result, args.curve_plot)
    return result
