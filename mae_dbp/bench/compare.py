"""The BP-vs-DBP comparison engine of ``bench speedup`` and ``bench zoo``.

One protocol for both: each method sweeps its main lr on the sweep seeds (the same multipliers for
both, :func:`mae_dbp.bench.sweep.lr_sweep`), then one BP and one DBP run per seed at each method's
pick, which of the two goes first alternating from seed to seed (slow drifts of the machine fall
on both alike). Every training run goes through :func:`cached_run`: a run folder that already
holds a finished run of the same training (``bench_run.json``, :func:`training_key`) and clock is
reused, so DBP variants are measured against one BP set. A pair is compared by one
:class:`Metric` (a metrics.csv column and its direction) in :func:`compare_pair`; seeds are
summarised by :func:`median_range`.

Metrics are measured once per epoch, so the times of :func:`compare_pair` have epoch resolution
(:mod:`mae_dbp.bench.curves` interpolates between epochs for the long-horizon curve).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mae_dbp.bench.sweep import lr_sweep
from mae_dbp.bench.timing import CLOCKS
from mae_dbp.errors import UserInputError

METHODS = ("bp", "dbp")


@dataclass(frozen=True)
class Metric:
    """What decides "better": the metrics.csv column ``key``, named ``name`` in result keys
    (``bp_best_<name>``), and its direction."""

    key: str
    name: str
    higher_is_better: bool = False

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target`` (a non-finite value never is)."""
        return math.isfinite(value) and (value >= target if self.higher_is_better else value <= target)

    def best(self, rows: list[dict]) -> dict:
        """The first row with the best finite value."""
        finite = [r for r in rows if math.isfinite(r[self.key])]
        return (max if self.higher_is_better else min)(finite, key=lambda r: r[self.key])

    def first_reach(self, rows: list[dict], target: float) -> dict | None:
        """The first row at least as good as ``target`` (None: never)."""
        return next((r for r in rows if self.reached(r[self.key], target)), None)


VAL_LOSS = Metric("val_loss", "val_loss")
TOP1 = Metric("val_top1", "top1", higher_is_better=True)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    return a / b if a is not None and b else None


def seconds_per_step(rows: list[dict]) -> float:
    return rows[-1]["train_seconds"] / max(1, rows[-1]["step"])


def compare_pair(bp: dict, dbp: dict, metric: Metric, levels: Sequence[float] = ()) -> dict:
    """The numbers of one BP / DBP pair of :func:`cached_run` records: BP's best ``B`` and its
    training seconds / epoch when first reached; DBP's seconds and epoch to first reach ``B`` and
    as fractions of BP's (below 1: DBP sooner; None: never); kg CO2 likewise; both bests; seconds
    per step; seconds and epochs of both to each fixed level (``to_level``)."""
    bp_rows, dbp_rows = bp["rows"], dbp["rows"]
    best = metric.best(bp_rows)
    hit = metric.first_reach(dbp_rows, best[metric.key]) or {}

    def reach(rows: list[dict], level: float) -> dict:
        return metric.first_reach(rows, level) or {}

    return {
        f"bp_best_{metric.name}": best[metric.key], f"dbp_best_{metric.name}": metric.best(dbp_rows)[metric.key],
        "bp_seconds_to_best": best["train_seconds"], "bp_epoch_of_best": best["epoch"],
        "dbp_seconds_to_bp_best": hit.get("train_seconds"), "dbp_epoch_to_bp_best": hit.get("epoch"),
        "time_fraction": ratio(hit.get("train_seconds"), best["train_seconds"]),
        "epoch_fraction": ratio(hit.get("epoch"), best["epoch"]),
        "bp_kg_co2_to_best": best.get("kg_co2"), "dbp_kg_co2_to_bp_best": hit.get("kg_co2"),
        "co2_fraction": ratio(hit.get("kg_co2"), best.get("kg_co2")),
        "bp_epochs": bp_rows[-1]["epoch"], "dbp_epochs": dbp_rows[-1]["epoch"],
        "bp_seconds_per_step": seconds_per_step(bp_rows), "dbp_seconds_per_step": seconds_per_step(dbp_rows),
        "step_time_ratio": seconds_per_step(dbp_rows) / seconds_per_step(bp_rows),
        "bp_cpu_per_wall": bp.get("cpu_per_wall"), "dbp_cpu_per_wall": dbp.get("cpu_per_wall"),
        "to_level": {f"{t:.4g}": {f"{m}_{unit}": reach(rows, t).get(column) for m, rows in (("bp", bp_rows), ("dbp", dbp_rows))
                                  for unit, column in (("seconds", "train_seconds"), ("epoch", "epoch"))} for t in levels},
    }


def add_device_arguments(parser) -> None:
    """``--device``, ``--dtype``, ``--compile`` of a training bench: every run's ``train.device``,
    ``train.mixed_precision`` and ``train.compile`` (:func:`device_fields`)."""
    from mae_dbp.bench.device import DEVICES, DTYPES

    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="train.device of every run: auto (CUDA when available, else CPU), cpu or cuda (default auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float32, or bf16 autocast (train.mixed_precision=bf16; weights and R stay float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every run's model (train.compile)")


def device_fields(device: str = "auto", dtype: str = "float32", compile: bool = False) -> dict:
    """The ``TrainConfig`` fields of the bench device flags (float32 is ``mixed_precision: no``)."""
    return {"device": device, "mixed_precision": "bf16" if dtype == "bf16" else "no", "compile": bool(compile)}


def device_entry(device: str, dtype: str, compile: bool) -> dict:
    """What the bench's JSON says about where its runs trained (:func:`mae_dbp.bench.device.device_record`)."""
    from mae_dbp.bench.device import device_record, resolve_device

    return device_record(resolve_device(device), dtype, compile)


def median_range(values: Sequence[float | None]) -> dict:
    """{"median", "min", "max", "never"} over seeds. None ("never reached") counts as +inf and is
    reported back as None; ``never`` counts them."""
    ordered = [math.inf if v is None else float(v) for v in values]
    if not ordered:
        return {"median": None, "min": None, "max": None, "never": 0}
    back = [None if math.isinf(v) else v for v in (statistics.median(ordered), min(ordered), max(ordered))]
    return {"median": back[0], "min": back[1], "max": back[2], "never": sum(v is None for v in values)}


def summarize(pairs: Sequence[dict], keys: Sequence[str]) -> dict:
    """:func:`median_range` over the pairs of each of ``keys``."""
    return {key: median_range([p.get(key) for p in pairs]) for key in keys}


def training_key(config: Any) -> dict:
    """What decides a run's training: the resolved config without ``log`` (where results go) and,
    for BP, without the ``decor`` settings it ignores (so DBP's defaults can change under cached BP
    runs). JSON-shaped (as read back from ``bench_run.json``)."""
    from mae_dbp.config import to_dict

    data = to_dict(config)
    data.pop("log", None)
    if not data.get("decor", {}).get("enabled", True):
        data["decor"] = {"enabled": False}
    return json.loads(json.dumps(data))


def same_training(old: Any, new: Any, default: Any) -> bool:
    """Whether a cached run's ``old`` training key is ``new``, where a key that ``old`` lacks
    counts as the same when ``new`` holds its default (a config key added since keeps old runs)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old == new
    default = default if isinstance(default, dict) else {}
    if any(key not in new for key in old):
        return False
    return all(same_training(old[k], v, default.get(k)) if k in old else (k in default and v == default[k])
               for k, v in new.items())


def cached_run(config: Any, run_dir: Path, train: Callable[[Any, Path, Callable[[], float]], dict],
               clock: str = "wall", extra: dict | None = None) -> dict:
    """One training run as a record {"training", "clock", "rows", "best_val_loss", "wall_seconds",
    "cpu_seconds", "cpu_per_wall", ...}, or the finished run already in ``run_dir`` with the same
    :func:`training_key` and ``clock`` (else ``run_dir`` is replaced). ``train(config, run_dir,
    clock_fn)`` runs it and returns fields to add to the record (e.g. the summary's best val loss);
    ``clock``: "wall" or "cpu" (the process's CPU seconds, :data:`~mae_dbp.bench.timing.CLOCKS`)."""
    from mae_dbp.files import atomic_write
    from mae_dbp.run_dir import RunDir
    from mae_dbp.train.records import read_csv

    if clock not in CLOCKS:
        raise UserInputError(f"--clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    record, key = RunDir(run_dir).bench_record, training_key(config)
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("clock") == clock and same_training(old.get("training"), key, training_key(type(config)())):
            return old
    if run_dir.exists():
        shutil.rmtree(run_dir)
    wall, cpu = time.monotonic(), time.process_time()
    outcome = train(config, run_dir, CLOCKS[clock]) or {}
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    rows = read_csv(RunDir(run_dir).metrics)
    result = {**(extra or {}), "clock": clock, "training": key, "rows": rows,
              "best_val_loss": min((r["val_loss"] for r in rows if math.isfinite(r["val_loss"])), default=math.nan),
              **outcome, "wall_seconds": wall, "cpu_seconds": cpu, "cpu_per_wall": cpu / wall if wall > 0 else math.nan}
    atomic_write(record, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))  # never half-written
    return result


def run_pairs(runner: Callable[[str, float, int], dict], lrs: dict[str, list[float]], seeds: Sequence[int],
              sweep_seeds: Sequence[int] | None, metric: Metric) -> tuple[dict | None, dict[tuple[str, int], dict]]:
    """The lr sweep on ``sweep_seeds`` (None: no sweep, each method's single lr), then one run per
    method and seed at each method's pick, the order reversed on every other seed. The methods are
    the keys of ``lrs`` (BP and DBP, or a race's arms). ``runner(method, lr,
    seed)`` returns a record (cached: the sweep's runs are reused). Returns (sweep, {(method, seed): record})."""
    best_key = f"best_{metric.name}"

    def scored(method: str, lr: float, seed: int) -> dict:
        record = runner(method, lr, seed)
        return {**record, best_key: metric.best(record["rows"])[metric.key]}

    methods = list(lrs)
    if sweep_seeds:
        sweep = lr_sweep(scored, lrs, sweep_seeds, key=best_key, higher_is_better=metric.higher_is_better)
        chosen = {m: sweep[m]["chosen"] for m in methods}
    elif any(len(lrs[m]) != 1 for m in methods):
        raise UserInputError("bench: several lrs need sweep seeds to choose among them")
    else:
        sweep, chosen = None, {m: lrs[m][0] for m in methods}
    results = {}
    for index, seed in enumerate(seeds):
        for method in methods if index % 2 == 0 else methods[::-1]:
            results[(method, seed)] = scored(method, chosen[method], seed)
    return sweep, results
