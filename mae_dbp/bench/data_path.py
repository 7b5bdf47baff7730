"""``mae-dbp bench data``: the training data path as configured against the model's own step.

    mae-dbp bench data --config CONFIG [KEY=VALUE ...] [--workers 1 2 4] [--images N] [--repeats R]

Builds the training set exactly as pretraining does (``train_val_datasets``: crop-first or whole
image, ``data.crops_per_image``, ``data.shards``) and measures:

* **MB read per sample**: one in-process pass over ``--images`` samples, counting the bytes the
  readers ask for (:mod:`mae_dbp.data.window`: the window for memory-mapped TIFF, stored segments
  for tiled TIFF, whole files otherwise, whole tar members for shards). With the page cache warm
  that is the read's cost; ``/proc/self/io`` would show neither page-cache hits nor memory-mapped
  reads. Beside it the MB of the 4 KB pages those reads touch: what a cold page cache or a disk
  moves at least. The same pass gives the CPU ms per sample (one thread: this process's CPU clock,
  blind to other load) and the rate one dedicated core would give;
* **levels** (pyramidal TIFFs, ``data.level_gap``): the share of crops read from a reduced level and
  how far those are from the full-resolution crop of the same box (:func:`level_fidelity`);
* **images/s for each ``--workers`` count**: the training DataLoader (``data.num_workers`` = N,
  the config's micro-batch), wall clock over ``--images`` samples after the workers started,
  filled their buffers and emptied their prefetch queue (:func:`warmup_batches`); ``--repeats``
  times, median and range;
* **the training step** (forward, backward, AdamW, R update as in ``bench pretrain``) at the
  config's batch (``--step-batch`` to shrink it on a CPU), ``--steps`` timed steps, on ``--device``;

and ends with one line: ``loader-bound: the loader gives X img/s, the step takes Y img/s`` (X: the
most workers measured) or ``step-bound: ...``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

TINY = "configs/pretrain/tiny_cpu_dbp.yaml"


def add_arguments(sub) -> None:
    """Register ``data`` on the ``mae-dbp bench`` sub-parsers (``--json`` is added by the caller)."""
    p = sub.add_parser("data", help="training data path (images/s per worker count, MB read per sample) vs the step")
    p.set_defaults(_bench_run="mae_dbp.bench.data_path:run")
    p.add_argument("--config", default=TINY, help=f"pretraining YAML (default {TINY})")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="DataLoader worker counts (default 1 2)")
    p.add_argument("--images", type=int, default=512, help="samples timed per measurement (default 512)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per worker count (default 3)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (default 3; 0: no step)")
    p.add_argument("--step-batch", type=int, default=None, help="batch of the step (default train.batch_size)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="device of the step")
    p.add_argument("--markdown", type=Path, help="also write the table as markdown")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def describe(config) -> str:
    """The data path in words, e.g. ``folder, crop-first, k=4``."""
    data = config.data
    where = f"shards {data.shards}" if data.shards else f"folder {data.root}"
    how = "crop-first" if data.crop_first or data.shards or data.crops_per_image > 1 else "whole image"
    levels = f", level_gap {data.level_gap}" if how == "crop-first" else ""
    return f"{where}, {how}, crops_per_image {data.crops_per_image}{levels}"


PREFETCH = 2  # batches each DataLoader worker keeps ready (torch's default prefetch_factor)


def warmup_batches(workers: int) -> int:
    """Batches drawn before the clock starts: each worker's first batch (start-up and, streaming,
    the shuffle buffer's fill) and every batch the workers had prefetched meanwhile, so the timed
    batches are produced while timed, not taken from a full queue."""
    return max(workers, 1) * (PREFETCH + 1)


def _loader(train_set, batch: int, workers: int, samples: int, seed: int):
    """A training DataLoader over at least ``samples`` samples after the warm-up (a long epoch, so
    no restart is timed)."""
    from torch.utils.data import DataLoader, RandomSampler

    from mae_dbp.data.stream import CropStream, StreamPlan

    batches = -(-samples // batch) + warmup_batches(workers) + max(workers, 1) * PREFETCH + 1
    options = dict(prefetch_factor=PREFETCH) if workers else {}
    if isinstance(train_set, CropStream):
        train_set.configure(StreamPlan(batch, seed=seed, batches=batches))
        return DataLoader(train_set, batch_size=batch, num_workers=workers, **options)
    sampler = RandomSampler(train_set, replacement=True, num_samples=batches * batch)
    return DataLoader(train_set, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True, **options)


def loader_rate(train_set, batch: int, workers: int, samples: int, seed: int = 0) -> float:
    """Images/s of the training DataLoader with ``workers`` workers, wall clock over ``samples``
    images after :func:`warmup_batches`."""
    batches = iter(_loader(train_set, batch, workers, samples, seed))
    for _ in range(warmup_batches(workers)):
        next(batches)
    timed = -(-samples // batch)
    start = time.perf_counter()
    for _ in range(timed):
        next(batches)
    seconds = time.perf_counter() - start
    del batches
    return timed * batch / seconds


def read_cost(train_set, samples: int, seed: int = 0) -> dict:
    """MB the readers ask for per sample and CPU ms per sample, one in-process pass (1 thread)."""
    import torch

    from mae_dbp.data.stream import CropStream, StreamPlan

    torch.manual_seed(seed)
    if isinstance(train_set, CropStream):
        train_set.configure(StreamPlan(1, seed=seed, batches=samples))
        items = iter(train_set)
    else:
        order = torch.randint(len(train_set), (samples,)).tolist()
        items = (train_set[i] for i in order)
    next(items)  # first call: imports, caches
    before, pages_before, start = train_set.bytes_read, train_set.pages_read, time.process_time()
    opened = getattr(train_set, "images_read", 0)
    count = sum(1 for _ in zip(range(samples), items))
    cpu = (time.process_time() - start) / count
    if isinstance(train_set, CropStream):  # the buffer reads ahead: bytes per image read, over k crops
        per = max(train_set.images_read - opened, 1) * train_set.k
    else:
        per = count
    return {"mb_per_sample": (train_set.bytes_read - before) / per / 1e6,
            "page_mb_per_sample": (train_set.pages_read - pages_before) / per / 1e6,
            "cpu_ms_per_sample": cpu * 1e3, "one_core_images_per_s": 1.0 / cpu, "samples": count}


def level_fidelity(train_set, samples: int, seed: int = 0) -> dict | None:
    """How crops read from reduced resolution levels compare with full resolution, over ``samples``
    random crops of a folder's images: the share of crops a level served, and for those the RMS
    difference to the full-resolution crop of the same box (snapped to the level's grid) over that
    crop's standard deviation, median and max. None without ``data.level_gap`` or for shards."""
    import random

    import torch

    from mae_dbp.data.crops import CropFirst, draw_box, to_float
    from mae_dbp.data.stream import CropStream
    from mae_dbp.data.window import open_window

    crop = train_set.crop if isinstance(train_set, CropStream) else train_set.transform
    paths = train_set.paths
    if not isinstance(crop, CropFirst) or crop.level_gap is None or paths is None:
        return None
    generator, pick = torch.Generator().manual_seed(seed), random.Random(seed)
    differences, from_level = [], 0
    for _ in range(samples):
        with open_window(paths[pick.randrange(len(paths))], train_set.channels) as reader:
            _, height, width = reader.shape
            level, (top, left, h, w) = reader.level_for(*draw_box(height, width, crop.scale, generator=generator),
                                                        min_side=crop.level_gap * crop.size)
            if level is reader:
                continue
            from_level += 1
            sy, sx = height / level.shape[1], width / level.shape[2]
            t, l = round(top * sy), round(left * sx)
            full = crop.resize(to_float(reader.read(t, l, min(round(h * sy), height - t), min(round(w * sx), width - l))))
            reduced = crop.resize(to_float(level.read(top, left, h, w)))
            differences.append(float((reduced - full).pow(2).mean().sqrt() / full.std().clamp_min(1e-12)))
    result = {"samples": samples, "share_from_levels": from_level / samples}
    if differences:
        result |= {"rms_over_std_median": statistics.median(differences), "rms_over_std_max": max(differences)}
    return result


def step_rate(config, batch: int, steps: int, device: str) -> dict:
    """Images/s of the training step (``bench pretrain``'s step with DBP as configured) at ``batch``."""
    import torch

    from mae_dbp.bench.pretrain_step import training_step
    from mae_dbp.train.decor_policy import DecorPolicy
    from mae_dbp.train.pretrain import build_model

    where = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    torch.manual_seed(0)
    model, _ = build_model(config)
    model.to(where)
    images = torch.randn(batch, model.in_chans, model.img_size, model.img_size, device=where)
    policy = DecorPolicy(model.encoder, config.decor) if config.decor.enabled else None
    step = training_step(model, images, policy)
    step()  # warm-up
    times = []
    for _ in range(steps):
        if where.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if where.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"batch": batch, "device": where.type, "step_s": seconds, "images_per_s": batch / seconds, "steps": steps,
            "decor": config.decor.enabled}


def run_data_bench(config, workers: list[int], samples: int, repeats: int, steps: int, step_batch: int | None,
                   device: str = "auto") -> dict:
    """All of ``bench data`` for a loaded pretraining config; returns the result dict."""
    from mae_dbp.bench.device import torch_threads
    from mae_dbp.data.dataset import train_val_datasets
    from mae_dbp.train.setup import batch_plan

    with torch_threads(1):  # one thread, as one loader worker has; restored afterwards
        train_set, _ = train_val_datasets(config.data, config.model.in_chans, config.model.img_size)
        micro, _ = batch_plan(config.train, 1)
        result = {"path": describe(config), "img_size": config.model.img_size, "loader_batch": micro,
                  **read_cost(train_set, min(samples, 256)), "workers": {}}
        fidelity = level_fidelity(train_set, min(samples, 256))
        if fidelity is not None:
            result["levels"] = fidelity
        for n in workers:
            rates = [loader_rate(train_set, micro, n, samples) for _ in range(repeats)]
            result["workers"][str(n)] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
                                         "runs": rates}
        loader = result["workers"][str(max(workers))]["median"]
        if steps > 0:
            result["step"] = step_rate(config, step_batch or config.train.batch_size, steps, device)
            step = result["step"]["images_per_s"]
            bound = "loader-bound" if loader < step else "step-bound"
            result["verdict"] = f"{bound}: the loader gives {loader:.3g} img/s, the step takes {step:.3g} img/s"
    return result


def markdown_table(result: dict) -> str:
    """The ``bench data`` result as a markdown table and its verdict line."""
    lines = [f"data path: {result['path']} ({result['img_size']} px crops, loader batch {result['loader_batch']})", "",
             "| measure | value |", "| --- | --- |",
             f"| MB read per sample | {result['mb_per_sample']:.3g} |",
             f"| MB of 4 KB pages touched per sample (cold cache: the least a disk moves) | "
             f"{result['page_mb_per_sample']:.3g} |",
             f"| CPU ms per sample (one thread) | {result['cpu_ms_per_sample']:.3g} |",
             f"| images/s of one dedicated core | {result['one_core_images_per_s']:.0f} |"]
    if "levels" in result:
        levels = result["levels"]
        lines.append(f"| crops read from a reduced level | {levels['share_from_levels']:.0%} |")
        if "rms_over_std_median" in levels:
            lines.append(f"| level crop vs full resolution, RMS / std (median, max) | "
                         f"{levels['rms_over_std_median']:.2%}, {levels['rms_over_std_max']:.2%} |")
    for n, rate in result["workers"].items():
        lines.append(f"| images/s, {n} worker(s) (median, range) | {rate['median']:.0f} ({rate['min']:.0f}-{rate['max']:.0f}) |")
    if "step" in result:
        step = result["step"]
        lines.append(f"| training step, batch {step['batch']} on {step['device']} | {step['images_per_s']:.1f} images/s |")
        lines += ["", result["verdict"]]
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    """``mae-dbp bench data``: measure, print the table (and the verdict), return the result."""
    from mae_dbp.config import load_config
    from mae_dbp.errors import UserInputError
    from mae_dbp.train.pretrain import PretrainConfig

    if min(args.workers) < 0 or args.images < 1 or args.repeats < 1 or args.steps < 0:
        raise UserInputError("bench data: --workers >= 0, --images and --repeats >= 1, --steps >= 0")
    config = load_config(PretrainConfig, args.config, args.overrides)
    result = run_data_bench(config, list(args.workers), args.images, args.repeats, args.steps, args.step_batch,
                            args.device)
    table = markdown_table(result)
    print(table)
    if args.markdown:
        from mae_dbp.files import atomic_write

        atomic_write(args.markdown, lambda tmp: tmp.write_text(table))
    return result
