"""``bench decor``: one training step of a decorrelated layer vs the plain layer, at several shapes.

What is timed, for both contenders alike, is a training step as the loop runs it: forward, a loss
(mean of the squared output), backward (with the input's gradient, as inside a network), an SGD
step on the layer's parameters (W changes every step, so the fused A = W R must be rebuilt as in
training) and ``zero_grad``. The DBP step also keeps its 10% subsample in the forward and calls
``decor.update`` (statistics, R step, metric) every ``update_every``-th step; a timed sample is a
block of ``update_every`` steps, so the update's cost is spread over the steps it stands for. With
``micro_batches`` = m, a step is m forward + backward passes whose gradients add up before the SGD
step (gradient accumulation, as the ViT-B recipe reaches batch 4096), and DBP defers W's gradient
(one Rᵀ per step, :func:`mae_dbp.decor.defer_weight_grads`). The
two contenders run alternately (plain block, DBP block, ...) in one process; the result has the
median seconds per step and the median and range of the per-pair ratios DBP / plain. ``clock``:
"wall" (perf_counter) or "cpu" (the process's CPU seconds: with one torch thread the work done,
much less disturbed by other jobs on a shared machine than wall-clock). ``device`` / ``dtype`` /
``compile``: where the layers and inputs live, bf16 autocast around the forward, and both contenders
under ``torch.compile`` (each warmed up alone first; the DBP layer's graph breaks and recompiles
after the warm-up are counted, :class:`~mae_dbp.bench.compile_stats.CompileWatch`).

Shapes: ViT-B/16 MAE with batch 256 (49 visible tokens each, 12,544 rows): qkv ``Linear(768,
2304)`` and fc1 ``Linear(768, 3072)``; the patch-embed ``Conv2d(3, 768, 16, stride 16)`` on 128
images of 224 x 224; and a small-batch layer as in the zoo MLP, ``Linear(1000, 1000)`` on 256 rows.
"""

from __future__ import annotations

import copy
import statistics
from typing import Callable

import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.bench.compile_stats import CompileWatch
from mae_dbp.bench.device import autocast, device_record, resolve_device
from mae_dbp.bench.timing import alternating_samples

SHAPES: dict[str, Callable[[], nn.Module]] = {
    "vitb_qkv": lambda: nn.Linear(768, 2304),
    "vitb_fc1": lambda: nn.Linear(768, 3072),
    "mlp_1000": lambda: nn.Linear(1000, 1000),
    "patch_embed": lambda: nn.Conv2d(3, 768, 16, stride=16),
}


def _input(name: str, tokens: int, images: int, device: torch.device | None = None) -> torch.Tensor:
    """The layer's input at ``name``: tokens x 768, 256 x 1000, or images x 3 x 224 x 224 (no gradient)."""
    if name == "patch_embed":
        return torch.randn(images, 3, 224, 224, device=device)
    shape = (256, 1000) if name == "mlp_1000" else (tokens, 768)
    return torch.randn(*shape, device=device, requires_grad=True)


def _steps(model: nn.Module, x: torch.Tensor, count: int, update: bool, update_lr: float,
           micro_batches: int = 1, dtype: str = "float32", forward: nn.Module | None = None) -> Callable[[], None]:
    """A block of ``count`` training steps of ``micro_batches`` forward + backward each (see the
    module docstring); DBP finishes deferred weight gradients before each step, updates R at the end.
    ``forward``: what runs the forward (``model`` or its compiled version)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    forward = model if forward is None else forward

    def run() -> None:
        for _ in range(count):
            for _ in range(micro_batches):
                with autocast(x.device, dtype):
                    y = forward(x)
                y.float().square().mean().backward()
            if update:
                decor.finish_weight_grads(model)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            x.grad = None  # the input's gradient is computed, not accumulated
        if update:
            decor.update(model, lr=update_lr)

    return run


def compare(layer: nn.Module, x: torch.Tensor, repeats: int, update_every: int = 1, form: str = "auto",
            clock: str = "wall", micro_batches: int = 1, dtype: str = "float32", compile: bool = False,
            **settings) -> dict:
    """Time training steps of the plain layer and its DBP version on input x (see the module
    docstring); with ``micro_batches`` > 1 each step accumulates that many backwards, and DBP
    defers W's gradient to one Rᵀ per step (:func:`mae_dbp.decor.defer_weight_grads`). The layers
    run on x's device; ``compile``: both under ``torch.compile``, with DBP's compile counts."""
    plain = nn.Sequential(layer).train().to(x.device)
    wrapped = nn.Sequential(copy.deepcopy(layer)).train().to(x.device)
    decor.apply(wrapped, ["0"], **settings)
    decor.defer_weight_grads(wrapped, micro_batches > 1)
    wrapped[0].form = form
    lr = settings.get("lr", 5e-4) * update_every  # the R progress per step of update_every = 1
    steps = {"plain": _steps(plain, x, update_every, False, lr, micro_batches, dtype,
                             torch.compile(plain) if compile else None),
             "dbp": _steps(wrapped, x, update_every, True, lr, micro_batches, dtype,
                           torch.compile(wrapped) if compile else None)}
    counts = {}
    if compile:  # each compiles alone: its warm-up blocks, then recompiles are counted
        for name in steps:
            watch = CompileWatch()
            watch.start()
            for _ in range(3):
                steps[name]()
            watch.warmed_up()
            steps[name] = watch.watch(steps[name])
            counts[name] = watch
    times = alternating_samples(steps, repeats, clock=clock, device=x.device)
    ratios = sorted(d / p for p, d in zip(times["plain"], times["dbp"]))
    return {
        "plain_s": statistics.median(times["plain"]) / update_every,
        "dbp_s": statistics.median(times["dbp"]) / update_every,
        "ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
        "form": wrapped[0].last_form, "update_every": update_every, "micro_batches": micro_batches,
        **({"compile_counts": {name: watch.record() for name, watch in counts.items()}} if compile else {}),
    }


def run_decor_bench(repeats: int = 5, update_every: int = 1, shapes: list[str] | None = None,
                    forms: tuple[str, ...] = ("auto",), sample_frac: float = 0.1, tokens: int = 12544,
                    images: int = 128, clock: str = "wall", variant: str = "standard", rank: int = 16,
                    micro_batches: int = 1, device: str = "auto", dtype: str = "float32", compile: bool = False) -> dict:
    """The layer benchmark at ``shapes`` (default all of :data:`SHAPES`); one entry per shape and
    form ("auto": the cost rule's choice; "fused" / "unfused" forced), plus ``<shape>_ratio`` for auto.
    ``tokens`` / ``images``: rows of the ViT-B shapes (smaller values only to smoke-test the bench);
    ``variant`` / ``rank``: the DBP layers' variant (``low_rank``: R = I + U Vᵀ of that rank);
    ``micro_batches``: forward + backward passes accumulated per optimizer step (per-step times
    cover all of them; DBP then defers W's gradient, as the trainer does when it accumulates);
    ``device`` / ``dtype`` / ``compile``: see the module docstring (recorded in the result)."""
    where = resolve_device(device)
    result: dict = {**device_record(where, dtype, compile), "repeats": repeats,
                    "update_every": update_every, "clock": clock, "variant": variant, "micro_batches": micro_batches,
                    "rank": rank if variant == "low_rank" else None}
    for name in shapes or list(SHAPES):
        torch.manual_seed(0)
        layer, x = SHAPES[name](), _input(name, tokens, images, where)
        for form in forms:
            entry = compare(layer, x, repeats, update_every, form, clock, micro_batches, dtype, compile,
                            sample_frac=sample_frac, variant=variant, rank=rank)
            result[name if form == "auto" else f"{name}_{form}"] = entry
            if form == "auto":
                result[f"{name}_ratio"] = entry["ratio"]
    # the names `bench all` reads
    if "vitb_qkv_ratio" in result:
        result["linear_ratio"] = result["vitb_qkv_ratio"]
    if "patch_embed_ratio" in result:
        result["conv_ratio"] = result["patch_embed_ratio"]
    return result


def markdown_table(result: dict) -> str:
    """One row per shape and form: seconds per step, DBP / plain median and range, the form taken;
    compiled: the DBP layer's graph breaks and recompiles after its warm-up."""
    compiled = result.get("compile", False)
    extra = (" DBP graph breaks | DBP recompiles |", "---|---|") if compiled else ("", "")
    lines = [f"| shape | form | plain s/step | DBP s/step | DBP / plain (median, range) |{extra[0]}",
             f"|---|---|---|---|---|{extra[1]}"]
    for key, entry in result.items():
        if isinstance(entry, dict):
            row = (f"| {key} | {entry['form']} | {entry['plain_s']:.4f} | {entry['dbp_s']:.4f} | "
                   f"{entry['ratio']:.3f} ({entry['ratio_min']:.3f} - {entry['ratio_max']:.3f}) |")
            if compiled:
                dbp = entry["compile_counts"]["dbp"]
                row += f" {dbp['graph_breaks']} | {dbp['recompiles_after_warmup']} |"
            lines.append(row)
    return "\n".join(lines)
