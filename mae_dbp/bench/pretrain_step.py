"""``bench pretrain``: MAE training-step time with DBP vs BP, same model and data, alternating.

A step is what the trainer does per optimizer step: forward (under ``--dtype`` autocast), backward,
optimizer step (the config's ``train.optimizer``; AdamW fused where torch has it) and (DBP) the R update through the trainer's
:class:`~mae_dbp.train.decor_policy.DecorPolicy` (its R lr, every ``decor.update_every``-th step).
After timing, one more step of each contender counts its host reads (what would make a CUDA step
wait: :class:`~mae_dbp.bench.host_reads.HostReads`).
Both models are built from the same config and seed; inputs are random images of the model's size
and the configured batch on ``--device`` (the data pipeline is the same for both and is left out).

With ``compile``, two more contenders run the same models under ``torch.compile`` (the whole MAE,
as ``train.compile`` does); each contender first runs ``warmup`` steps on its own (compiling,
peak memory), where dynamo's counters give its graph breaks and graphs; every frame compiled after
those steps counts as a recompile (:class:`~mae_dbp.bench.compile_stats.CompileWatch`).
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from mae_dbp.bench.compile_stats import CompileWatch
from mae_dbp.bench.device import (autocast, device_record, peak_memory_gib, reset_peak_memory, resolve_device,
                                  synchronize)
from mae_dbp.bench.host_reads import HostReads
from mae_dbp.bench.timing import time_alternating
from mae_dbp.config import GuardConfig
from mae_dbp.optim import build_optimizer
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.pretrain import PretrainConfig, build_model
from mae_dbp.train.schedules import WarmupCosine

WARMUP_STEPS = 3  # compiling happens here; frames compiled later are recompiles


def training_step(model: torch.nn.Module, images: torch.Tensor, policy: DecorPolicy | None = None,
                  dtype: str = "float32", forward: torch.nn.Module | None = None, optimizer: str = "adamw",
                  optimizer_args: dict | None = None) -> Callable[[], None]:
    """A closure running one optimizer step of ``model`` (through ``forward``, e.g. its compiled
    version, when given) with ``optimizer`` (a ``train.optimizer`` name); with a ``policy``, the R
    step after it as the trainer does (the policy's R lr and ``update_every``; a constant main lr of 1e-4)."""
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optimizer, 1e-4, (0.9, 0.95),
                                images.device, optimizer_args)
    schedule, guard = WarmupCosine(1e-4, total_steps=10**9, floor=1e-4), InstabilityGuard(GuardConfig(enabled=False))
    model.train()
    forward = model if forward is None else forward
    steps = [0]

    def step() -> None:
        with autocast(images.device, dtype):
            loss = forward(images)[0]
        loss.backward()
        if policy is not None:
            policy.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if policy is not None:
            policy.after_step(steps[0], schedule, guard)
        steps[0] += 1

    return step


def _models(config: PretrainConfig, device: torch.device) -> dict[str, tuple[torch.nn.Module, DecorPolicy | None]]:
    """{"bp": (model, None), "dbp": (model, policy)}, both from seed 0, on ``device``."""
    models = {}
    for name, enabled in (("bp", False), ("dbp", True)):
        cfg = copy.deepcopy(config)
        cfg.decor.enabled = enabled
        torch.manual_seed(0)
        model = build_model(cfg)[0].to(device)
        models[name] = (model, DecorPolicy(model.encoder, cfg.decor) if enabled else None)
    return models


def run_pretrain_bench(config: PretrainConfig, steps: int, batch_size: int | None = None, device: str = "auto",
                       dtype: str = "float32", compile: bool = False, warmup: int = WARMUP_STEPS,
                       config_name: str | None = None) -> dict:
    """{"bp_step_s", "dbp_step_s", "overhead_ratio", ...} for the config's model and batch size; with
    ``compile`` also the compiled contenders, their ratios and compile counts (module docstring)."""
    where = resolve_device(device)
    batch = batch_size or config.train.batch_size
    contenders: dict[str, tuple[torch.nn.Module, DecorPolicy | None, torch.nn.Module | None]] = {
        name: (model, policy, None) for name, (model, policy) in _models(config, where).items()}
    if compile:
        for name, (model, policy) in _models(config, where).items():
            contenders[f"{name}_compiled"] = (model, policy, torch.compile(model))
    dbp_model = contenders["dbp"][0]
    images = torch.randn(batch, dbp_model.in_chans, dbp_model.img_size, dbp_model.img_size, device=where)
    k = config.decor.update_every  # a timed sample is a block of k steps, so it holds one R update
    blocks, watches, first = {}, {}, {}
    for name, (model, policy, compiled) in contenders.items():
        step = training_step(model, images, policy, dtype, compiled, config.train.optimizer, config.train.optimizer_args)
        watch = CompileWatch()
        if compiled is not None:
            watch.start()
        reset_peak_memory(where)
        began = time.perf_counter()
        for _ in range(warmup):  # alone, so compiling and peak memory belong to this contender
            step()
        synchronize(where)
        first[name] = {"first_steps_s": time.perf_counter() - began, "peak_mem_gib": peak_memory_gib(where)}
        if compiled is not None:
            watch.warmed_up()
            watches[name] = watch
            step = watch.watch(step)
        blocks[name] = (lambda step=step: [step() for _ in range(k)])
    times = {name: seconds / k for name, seconds in
             time_alternating(blocks, repeats=steps, warmup=1, device=where).items()}
    flops = {}
    for name, block in blocks.items():  # what a CUDA step would wait for (bench/host_reads.py)
        with HostReads() as reads:
            block()
        first[name]["host_reads_per_step"] = reads.count / k
        if not name.endswith("_compiled"):
            with FlopCounterMode(display=False) as counter:  # the arithmetic of k steps (one R update)
                block()
            flops[name] = counter.get_total_flops()
    result = {
        "bp_step_s": times["bp"], "dbp_step_s": times["dbp"], "overhead_ratio": times["dbp"] / times["bp"],
        "flop_ratio": flops["dbp"] / flops["bp"], "config": config_name,
        "batch_size": batch, "optimizer": config.train.optimizer, "encoder": config.model.encoder, "img_size": dbp_model.img_size,
        "decor_sites": len(contenders["dbp"][1].summary()["decor_sites"]), "update_every": k,
        "warmup_steps": warmup, "steps": steps, **device_record(where, dtype, compile), "contenders": first,
    }
    if compile:
        result.update({
            "bp_compiled_step_s": times["bp_compiled"], "dbp_compiled_step_s": times["dbp_compiled"],
            "compiled_ratio": times["dbp_compiled"] / times["bp_compiled"],
            "dbp_compiled_vs_eager": times["dbp_compiled"] / times["dbp"],
            "bp_compiled_vs_eager": times["bp_compiled"] / times["bp"],
            "compile_counts": {name.removesuffix("_compiled"): watch.record() for name, watch in watches.items()},
        })
    return result


def markdown_table(result: dict) -> str:
    """One row per contender: s/step, vs eager BP, first steps, peak memory, host reads per step,
    graph breaks, graphs, recompiles."""
    counts = result.get("compile_counts", {})
    lines = ["| contender | s/step | / eager BP | first steps s | peak GiB | host reads / step | graph breaks | graphs | "
             f"recompiles after {result['warmup_steps']} steps |", "|---|---|---|---|---|---|---|---|---|"]
    for name, first in result["contenders"].items():
        seconds = result[f"{name}_step_s"]
        c = counts.get(name.removesuffix("_compiled"), {}) if name.endswith("_compiled") else {}
        peak = "-" if first["peak_mem_gib"] is None else f"{first['peak_mem_gib']:.2f}"
        lines.append(f"| {name} | {seconds:.4f} | {seconds / result['bp_step_s']:.3f} | {first['first_steps_s']:.1f} | "
                     f"{peak} | {first.get('host_reads_per_step', '-'):g} | {c.get('graph_breaks', '-')} | {c.get('graphs', '-')} | "
                     f"{c.get('recompiles_after_warmup', '-')} |")
    if "flop_ratio" in result:
        lines.append(f"\nDBP / BP: {result['overhead_ratio']:.3f} in time, {result['flop_ratio']:.3f} in FLOPs "
                     "(torch.utils.flop_counter; the arithmetic floor of the time ratio)")
    return "\n".join(lines)
