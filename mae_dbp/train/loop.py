"""The accelerate training loop shared by MAE pretraining and the classification zoo.

A :class:`Task` says what is trained and how a batch becomes a loss; :func:`fit` does the rest the
same way for every task: AdamW with per-iteration warm-up + cosine lr, gradient accumulation to the
configured effective batch, one R step (``mae_dbp.decor.update``) after every optimizer step with
its own schedule, the instability guard, validation every epoch, best / last checkpoints (atomic,
resumable), metrics.csv, emissions and summary.json. Runs unchanged under ``accelerate launch``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import broadcast, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mae_dbp import decor
from mae_dbp.config import LogConfig, TrainConfig
from mae_dbp.errors import UserInputError
from mae_dbp.train.checkpoint import load_checkpoint, save_checkpoint
from mae_dbp.train.emissions import TrainingEmissions
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.records import RunRecords
from mae_dbp.train.schedules import decor_lr, warmup_cosine


class Task:
    """What differs between jobs. ``model`` is trained; DBP layers live under ``decor_root``."""

    model: nn.Module
    decor_root: nn.Module

    def train_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        """Validation metrics over the whole loader, identical on every rank; must hold ``val_loss``."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names of ``model`` without weight decay (besides biases and norms)."""
        return set()

    def summarize(self, rows: list[dict]) -> dict:
        """Task-specific entries for summary.json from the per-epoch rows (e.g. time to a target)."""
        return {}

    def finish(self, run_dir: Path, model: nn.Module, val_set: Dataset) -> None:
        """Task-specific plots at the end of a run (main process, best weights loaded)."""


@dataclass
class LoopState:
    """Everything a resumed run needs besides model and optimizer tensors."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps
    train_seconds: float = 0.0
    best_val: float = math.inf
    best_epoch: int = 0
    best_seconds: float = 0.0
    best_kg_co2: float = 0.0
    kg_co2: float = 0.0
    kwh: float = 0.0
    rows: list[dict] = field(default_factory=list)


def build_accelerator(train_cfg: TrainConfig, log_cfg: LogConfig, run_dir: Path) -> Accelerator:
    """An Accelerator for this machine: CPU when no GPU (gloo ranks under torchrun/accelerate)."""
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=train_cfg.mixed_precision,
        log_with=log_cfg.log_with,
        project_dir=str(run_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_cfg.seed),
        # R is a buffer that update() keeps identical on all ranks: no per-forward broadcast needed
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


def param_groups(model: nn.Module, weight_decay: float, no_decay: set[str]) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms (1-d tensors) and the named tokens."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if param.ndim <= 1 or name in no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def accumulation_steps(train_cfg: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step so that batch_size x world x steps = effective_batch."""
    per_step = train_cfg.batch_size * world_size
    return max(1, round(train_cfg.effective_batch / per_step))


def _snapshot(accelerator: Accelerator, model: nn.Module, optimizer, state: LoopState, guard: InstabilityGuard) -> dict:
    return {
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "loop": {k: v for k, v in vars(state).items()},
        "guard": guard.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _out_of_time(accelerator: Accelerator, seconds: float, budget: float) -> bool:
    """The main process's clock decides, so every rank stops after the same step."""
    flag = torch.tensor([float(seconds >= budget)], device=accelerator.device)
    return bool(broadcast(flag, from_process=0).item()) if accelerator.num_processes > 1 else bool(flag.item())


def _restore(accelerator: Accelerator, model: nn.Module, optimizer, path: Path) -> dict:
    checkpoint = load_checkpoint(path)
    accelerator.unwrap_model(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint


def fit(config, task: Task, train_set: Dataset, val_set: Dataset, run_dir: Path,
        resume: bool = False, extra_summary: dict | None = None) -> dict:
    """Train ``task.model`` as the config says; returns the summary (also in run_dir/summary.json)."""
    train_cfg, log_cfg, decor_cfg = config.train, config.log, config.decor
    accelerator = build_accelerator(train_cfg, log_cfg, run_dir)
    set_seed(train_cfg.seed)
    main = accelerator.is_main_process
    accum = accumulation_steps(train_cfg, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accum
    train_loader = DataLoader(train_set, batch_size=train_cfg.batch_size, shuffle=True, drop_last=True,
                              num_workers=config.data.num_workers)
    val_loader = DataLoader(val_set, batch_size=train_cfg.batch_size, shuffle=False,
                            num_workers=config.data.num_workers)
    if len(train_loader) == 0:
        raise UserInputError(f"train set has {len(train_set)} images, fewer than train.batch_size={train_cfg.batch_size}")
    steps_per_epoch = max(1, len(train_loader) // (accum * accelerator.num_processes))
    total_steps = steps_per_epoch * train_cfg.epochs
    effective = train_cfg.batch_size * accelerator.num_processes * accum
    peak_lr = train_cfg.base_lr * effective / 256
    model = task.model
    optimizer = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay, task.no_weight_decay()),
                                  lr=peak_lr, betas=tuple(train_cfg.betas))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    decor_root = task.decor_root
    guard = InstabilityGuard(train_cfg.guard)
    state = LoopState()
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume:
        checkpoint = _restore(accelerator, model, optimizer, last_path)
        state = LoopState(**checkpoint["loop"])
        guard.load_state_dict(checkpoint["guard"])
        torch.set_rng_state(checkpoint["rng_cpu"])
        if checkpoint["rng_cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])
    elif main:
        save_checkpoint(_snapshot(accelerator, model, optimizer, state, guard), last_path)
    records = RunRecords(run_dir, enabled=main, plots=log_cfg.plots)
    emissions = TrainingEmissions(run_dir, log_cfg.country, enabled=main and log_cfg.emissions,
                                  kg_co2=state.kg_co2, kwh=state.kwh)
    if log_cfg.log_with:
        accelerator.init_trackers(log_cfg.project, config={"lr": peak_lr, "effective_batch": effective})
    warmup_steps = round(train_cfg.warmup_epochs * steps_per_epoch)
    decor_base = decor_cfg.lr if decor_cfg.enabled else 0.0
    stop_epoch = min(train_cfg.epochs, train_cfg.stop_after_epoch or train_cfg.epochs)
    budget = train_cfg.max_train_seconds
    accelerator.wait_for_everyone()

    while state.epoch < stop_epoch and not (budget and state.train_seconds >= budget):
        epoch = state.epoch + 1
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        losses, site_metrics, lr, r_lr = [], {}, peak_lr, 0.0
        emissions.start(f"train_epoch_{epoch}")
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{train_cfg.epochs}", disable=not main, leave=False)
        for batch in bar:
            with accelerator.accumulate(model):
                loss = task.train_loss(model, batch)
                finite = bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all())
                if not finite:
                    optimizer.zero_grad(set_to_none=True)
                    if guard.settings.enabled:
                        _restore(accelerator, model, optimizer, last_path)
                        event = guard.record_restore("non-finite training loss", epoch, state.step)
                        if main:
                            tqdm.write(f"mae-dbp guard: {event}")
                        continue
                    raise FloatingPointError(f"non-finite training loss at step {state.step} (train.guard.enabled is false)")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    lr = warmup_cosine(state.step, total_steps, warmup_steps, peak_lr, train_cfg.min_lr)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    if train_cfg.grad_clip:
                        accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    r_lr = 0.0 if guard.decor_stopped else guard.decor_scale * decor_lr(
                        decor_cfg.lr_schedule, state.step, total_steps, decor_base, lr, peak_lr)
                    if decor_cfg.enabled:
                        site_metrics = decor.update(decor_root, lr=r_lr) or site_metrics
                    state.step += 1
            losses.append(loss.detach())
            if main and len(losses) % 10 == 1:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
            if budget and _out_of_time(accelerator, state.train_seconds + time.perf_counter() - start, budget):
                break
        state.train_seconds += time.perf_counter() - start
        emissions.stop()
        state.kg_co2, state.kwh = emissions.kg_co2, emissions.kwh
        train_loss = float(accelerator.reduce(torch.stack(losses).mean(), "mean")) if losses else math.nan

        if decor_cfg.enabled and not decor.ranks_agree(decor_root):
            raise RuntimeError(f"epoch {epoch}: the decorrelation matrices differ between processes")
        model.eval()
        with torch.no_grad():
            val = task.evaluate(model, val_loader, accelerator)
        state.epoch = epoch
        row = {"epoch": epoch, "step": state.step, "train_seconds": round(state.train_seconds, 3),
               "train_loss": train_loss, **val, "lr": lr, "decor_lr": r_lr,
               "decor_metric": sum(site_metrics.values()) / len(site_metrics) if site_metrics else math.nan,
               "kg_co2": state.kg_co2}
        state.rows.append(row)
        records.epoch(state.rows, site_metrics)
        if log_cfg.log_with:
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=state.step)
        if main:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        improved = val["val_loss"] < state.best_val
        if improved:
            state.best_val, state.best_epoch = val["val_loss"], epoch
            state.best_seconds, state.best_kg_co2 = state.train_seconds, state.kg_co2
        rolled_back = not improved and guard.val_is_bad(val["val_loss"], state.best_val)
        if rolled_back:
            accelerator.wait_for_everyone()
            _restore(accelerator, model, optimizer, best_path)
            event = guard.record_restore("validation loss rose past tolerance", epoch, state.step)
            if main:
                tqdm.write(f"mae-dbp guard: {event}")
        if main:
            snapshot = _snapshot(accelerator, model, optimizer, state, guard)
            if improved:
                save_checkpoint(snapshot, best_path)
            save_checkpoint(snapshot, last_path)
        accelerator.wait_for_everyone()

    emissions.close()
    summary = {
        "best_val_loss": state.best_val, "best_epoch": state.best_epoch,
        "train_seconds_to_best": state.best_seconds, "train_seconds_total": state.train_seconds,
        "kg_co2": state.kg_co2, "kwh": state.kwh, "kg_co2_to_best": state.best_kg_co2,
        "emissions_measured": emissions.available or state.kg_co2 > 0,
        "epochs_done": state.epoch, "steps": state.step, "world_size": accelerator.num_processes,
        "effective_batch": effective, "peak_lr": peak_lr,
        "decor_sites": sorted(n for n, _ in decor.decor_modules(decor_root)),
        "decor_ranks_checked": accelerator.num_processes if decor_cfg.enabled else 0,
        "guard_events": guard.events, **task.summarize(state.rows), **(extra_summary or {}),
    }
    if main:
        if best_path.is_file():
            accelerator.unwrap_model(model).load_state_dict(load_checkpoint(best_path)["model"])
        records.finish(summary, state.rows)
        if log_cfg.plots:
            task.finish(run_dir, accelerator.unwrap_model(model), val_set)
    if log_cfg.log_with:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return summary
