"""The accelerate training loop shared by MAE pretraining and the classification zoo.

Split as facebookresearch/mae splits it: :func:`setup` (accelerator, loaders, AdamW, resume),
:func:`train_one_epoch`, :func:`evaluate`, :func:`end_epoch` (records, guard, checkpoints) and
:func:`fit`, which strings them together. A :class:`Task` says what is trained and how a batch
becomes a loss; a :class:`~mae_dbp.train.decor_policy.DecorPolicy` does the R updates after each
optimizer step. Per-step warm-up + cosine lr, accumulation to ``train.effective_batch``, best / last
checkpoints (atomic, resumable), metrics.csv, emissions and summary.json. Runs unchanged under
``accelerate launch``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import broadcast, set_seed
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from mae_dbp.config import LogConfig, TrainConfig
from mae_dbp.data.loader import build_train_loader
from mae_dbp.errors import UserInputError
from mae_dbp.files import load_checkpoint, save_checkpoint
from mae_dbp.run_dir import RunDir
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.emissions import TrainingEmissions
from mae_dbp.train.guard import InstabilityGuard, non_finite_rows
from mae_dbp.train.records import RunRecords
from mae_dbp.train.schedules import WarmupCosine


class Task:
    """What differs between jobs: ``model`` is trained; a batch is what the job's dataset collates to."""

    model: nn.Module

    def train_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def inputs(self, batch: Any) -> torch.Tensor:
        """The model inputs of a batch (B, ...), checked when the loss turns non-finite."""
        return batch[0]

    def evaluate(self, model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> dict[str, float]:
        """Validation metrics over the whole loader, identical on every rank; must hold ``val_loss``."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names of ``model`` without weight decay (besides biases and norms)."""
        return set()

    def summarize(self, rows: list[dict]) -> dict:
        """Task-specific entries for summary.json from the per-epoch rows (e.g. time to a target)."""
        return {}

    def finish(self, run_dir: RunDir, model: nn.Module, val_set: Dataset, rows: list[dict]) -> None:
        """Task-specific plots at the end of a run (main process, best weights loaded, ``rows`` of
        metrics.csv)."""


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


class WithIndex(Dataset):
    """``(dataset[i], i)``: lets the loop name the files of a batch with non-finite inputs."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index], index

    def names(self, indices: list[int]) -> list[str]:
        paths = getattr(self.dataset, "paths", None) or [f"sample {i}" for i in range(len(self.dataset))]
        return [str(paths[i]) for i in indices]


@dataclass
class Run:
    """What the phases of one run share."""

    accelerator: Accelerator
    model: nn.Module  # prepared (DDP-wrapped under several processes)
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader  # yields (batch, dataset indices)
    val_loader: DataLoader
    train_set: WithIndex
    schedule: WarmupCosine  # main lr per optimizer step
    guard: InstabilityGuard
    policy: DecorPolicy
    run_dir: RunDir
    train_cfg: TrainConfig
    state: LoopState = field(default_factory=LoopState)
    lr: float = 0.0  # main lr of the last step

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def snapshot(self) -> dict:
        return {
            "model": self.accelerator.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loop": dict(vars(self.state)),
            "guard": self.guard.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def restore(self, path: Path) -> dict:
        """Load model and optimizer from the checkpoint ``path``; returns the whole checkpoint."""
        checkpoint = load_checkpoint(path)
        self.accelerator.unwrap_model(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        return checkpoint

    def say(self, text: str) -> None:
        if self.main:
            tqdm.write(text)


def build_accelerator(train_cfg: TrainConfig, log_cfg: LogConfig, run_dir: RunDir) -> Accelerator:
    """An Accelerator for this machine: CPU when no GPU (gloo ranks under torchrun/accelerate)."""
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=train_cfg.mixed_precision,
        log_with=log_cfg.log_with,
        project_dir=str(run_dir.path),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_cfg.seed),
        # R is a buffer that update() keeps identical on all ranks: no per-forward broadcast needed
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


def batch_plan(train_cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(micro-batch per process, accumulation steps) giving exactly ``train.effective_batch`` per
    optimizer step over ``world_size`` processes, with micro-batches of at most ``train.batch_size``."""
    effective, most = train_cfg.effective_batch, train_cfg.batch_size
    accum = max(1, math.ceil(effective / (most * world_size)))
    while accum <= effective and effective % (world_size * accum):
        accum += 1
    if effective % (world_size * accum):
        raise UserInputError(f"train.effective_batch: expected a multiple of the {world_size} processes, got {effective}")
    return effective // (world_size * accum), accum


def setup(config, task: Task, policy: DecorPolicy, train_set: Dataset, val_set: Dataset, run_dir: RunDir,
          resume: bool) -> Run:
    """Accelerator, loaders, AdamW and schedule, guard; the state of ``run_dir.last`` when resuming."""
    train_cfg = config.train
    accelerator = build_accelerator(train_cfg, config.log, run_dir)
    set_seed(train_cfg.seed)
    micro, accelerator.gradient_accumulation_steps = batch_plan(train_cfg, accelerator.num_processes)
    indexed = train_set if isinstance(train_set, IterableDataset) else WithIndex(train_set)
    workers = config.data.num_workers
    train_loader, _ = build_train_loader(indexed, config.data, micro, accelerator, train_cfg.seed)
    val_loader = DataLoader(val_set, batch_size=micro, shuffle=False, num_workers=workers)
    per_epoch = len(train_loader) // accelerator.gradient_accumulation_steps  # per process: all step together
    if per_epoch == 0:
        raise UserInputError(f"train set has {len(train_set)} images, fewer than train.batch_size / one optimizer "
                             f"step (train.effective_batch={train_cfg.effective_batch})")
    peak = train_cfg.base_lr * train_cfg.effective_batch / 256
    schedule = WarmupCosine(peak, per_epoch * train_cfg.epochs, round(train_cfg.warmup_epochs * per_epoch), train_cfg.min_lr)
    groups = param_groups_weight_decay(task.model, train_cfg.weight_decay, no_weight_decay_list=task.no_weight_decay())
    optimizer = torch.optim.AdamW(groups, lr=peak, betas=tuple(train_cfg.betas))
    model, optimizer, val_loader = accelerator.prepare(task.model, optimizer, val_loader)
    run = Run(accelerator, model, optimizer, train_loader, val_loader, indexed, schedule,
              InstabilityGuard(train_cfg.guard), policy, run_dir, train_cfg, lr=peak)
    policy.start(accelerator.gradient_accumulation_steps, per_epoch, schedule.total_steps)
    if resume:
        checkpoint = run.restore(run_dir.last)
        run.state = LoopState(**checkpoint["loop"])
        run.guard.load_state_dict(checkpoint["guard"])
        policy.resume(run.state.step)
        torch.set_rng_state(checkpoint["rng_cpu"])
        if checkpoint["rng_cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])
    elif run.main:
        save_checkpoint(run.snapshot(), run_dir.last)
    run.say(f"effective batch {train_cfg.effective_batch} = {accelerator.num_processes} process(es) x {micro} images "
            f"x {accelerator.gradient_accumulation_steps} accumulation step(s); peak lr {peak:.3g}")
    return run


def _any_rank(accelerator: Accelerator, flag: bool) -> bool:
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).sum() > 0)


def _out_of_time(accelerator: Accelerator, seconds: float, budget: float) -> bool:
    """The main process's clock decides, so every rank stops after the same step."""
    return bool(broadcast(torch.tensor([float(seconds >= budget)], device=accelerator.device)).item())


def non_finite_loss(run: Run, task: Task, batch: Any, index: torch.Tensor, epoch: int) -> None:
    """A non-finite loss: non-finite inputs are a data error naming the files; otherwise the guard
    restores last.pt and calms R down (or, with the guard off, the run stops)."""
    rows = non_finite_rows(task.inputs(batch))
    if _any_rank(run.accelerator, bool(rows)):
        names = run.train_set.names([int(index[r]) for r in rows]) or ["(on another process)"]
        raise UserInputError(f"non-finite model inputs (nan/inf) from {', '.join(names[:5])}: fix or remove the "
                             f"file(s), or check data.mean/std")
    if not run.guard.settings.enabled:
        raise FloatingPointError(f"non-finite training loss at step {run.state.step} (train.guard.enabled is false)")
    run.restore(run.run_dir.last)
    event = run.guard.record_restore("non-finite training loss", epoch, run.state.step)
    run.say(f"mae-dbp guard: {event}")


def optimizer_step(run: Run, loss: torch.Tensor) -> None:
    """Backward; on the last micro-batch: lr of this step, clipping, AdamW step and the R step."""
    acc = run.accelerator
    acc.backward(loss)
    if acc.sync_gradients:
        run.policy.before_step()
        run.lr = run.schedule(run.state.step)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr
        if run.train_cfg.grad_clip:
            acc.clip_grad_norm_(run.model.parameters(), run.train_cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if acc.sync_gradients:
        run.policy.after_step(run.state.step, run.schedule, run.guard)
        run.state.step += 1


def train_one_epoch(run: Run, task: Task, epoch: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """One pass over the training data (or until the time budget); returns the mean loss over ranks.
    ``clock`` (seconds) times it into ``train_seconds`` (e.g. ``time.process_time`` for CPU seconds)."""
    acc, budget = run.accelerator, run.train_cfg.max_train_seconds
    run.model.train()
    run.train_loader.set_epoch(epoch)  # the seedable sampler's shuffle of this epoch, also after a resume
    losses, start = [], clock()
    bar = tqdm(run.train_loader, desc=f"epoch {epoch}/{run.train_cfg.epochs}", disable=not run.main, leave=False)
    for batch, index in bar:
        with acc.accumulate(run.model):
            loss = task.train_loss(run.model, batch)
            if run.guard.loss_is_bad(float(acc.gather(loss.detach().reshape(1)).sum())):
                run.optimizer.zero_grad(set_to_none=True)
                non_finite_loss(run, task, batch, index, epoch)
                continue
            optimizer_step(run, loss)
        losses.append(loss.detach())
        if run.main and len(losses) % 10 == 1:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{run.lr:.2e}")
        if budget and _out_of_time(acc, run.state.train_seconds + clock() - start, budget):
            break
    run.state.train_seconds += clock() - start
    return float(acc.reduce(torch.stack(losses).mean(), "mean")) if losses else math.nan


def evaluate(run: Run, task: Task) -> dict[str, float]:
    """The task's validation metrics (identical on every rank)."""
    run.model.eval()
    with torch.no_grad():
        return task.evaluate(run.model, run.val_loader, run.accelerator)


def end_epoch(run: Run, epoch: int, train_loss: float, val: dict[str, float], records: RunRecords) -> None:
    """Record the epoch, keep the best, let the guard roll back to best.pt, write the checkpoints."""
    state, policy = run.state, run.policy
    state.epoch = epoch
    row = {"epoch": epoch, "step": state.step, "train_seconds": round(state.train_seconds, 3), "train_loss": train_loss,
           **val, "lr": run.lr, "decor_lr": policy.lr, "decor_metric": policy.mean_metric(), "kg_co2": state.kg_co2}
    state.rows.append(row)
    records.epoch(state.rows, policy.site_metrics())
    numbers = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    run.accelerator.log(numbers, step=state.step)  # a no-op without log.log_with trackers
    run.say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    improved = val["val_loss"] < state.best_val
    if improved:
        state.best_val, state.best_epoch = val["val_loss"], epoch
        state.best_seconds, state.best_kg_co2 = state.train_seconds, state.kg_co2
    elif run.guard.val_is_bad(val["val_loss"], state.best_val):
        run.accelerator.wait_for_everyone()
        run.restore(run.run_dir.best)
        event = run.guard.record_restore("validation loss rose past tolerance", epoch, state.step)
        run.say(f"mae-dbp guard: {event}")
    if run.main:
        snapshot = run.snapshot()
        if improved:
            save_checkpoint(snapshot, run.run_dir.best)
        save_checkpoint(snapshot, run.run_dir.last)
    run.accelerator.wait_for_everyone()


def summarize(run: Run, task: Task, emissions: TrainingEmissions) -> dict:
    state = run.state
    return {
        "best_val_loss": state.best_val, "best_epoch": state.best_epoch,
        "train_seconds_to_best": state.best_seconds, "train_seconds_total": state.train_seconds,
        "kg_co2": state.kg_co2, "kwh": state.kwh, "kg_co2_to_best": state.best_kg_co2,
        "emissions_measured": emissions.available or state.kg_co2 > 0,
        "epochs_done": state.epoch, "steps": state.step, "world_size": run.accelerator.num_processes,
        "effective_batch": run.train_cfg.effective_batch, "peak_lr": run.schedule.peak,
        **run.policy.summary(), "guard_events": run.guard.events, **task.summarize(state.rows),
    }


def fit(config, task: Task, policy: DecorPolicy, train_set: Dataset, val_set: Dataset, run_dir: RunDir,
        resume: bool = False, extra_summary: dict | None = None, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train ``task.model`` as ``config.train`` says; returns the summary (also ``run_dir.summary``).
    ``clock`` measures the training seconds (and the ``max_train_seconds`` budget)."""
    run = setup(config, task, policy, train_set, val_set, run_dir, resume)
    log, train_cfg, state = config.log, config.train, run.state
    records = RunRecords(run_dir, enabled=run.main, plots=log.plots)
    emissions = TrainingEmissions(run_dir.path, log.country, enabled=run.main and log.emissions, kg_co2=state.kg_co2, kwh=state.kwh)
    if log.log_with:
        run.accelerator.init_trackers(log.project, config={"lr": run.schedule.peak, "effective_batch": run.train_cfg.effective_batch})
    stop_epoch = min(train_cfg.epochs, train_cfg.stop_after_epoch or train_cfg.epochs)
    budget = train_cfg.max_train_seconds
    run.accelerator.wait_for_everyone()
    while state.epoch < stop_epoch and not (budget and state.train_seconds >= budget):
        epoch = state.epoch + 1
        emissions.start(f"train_epoch_{epoch}")
        train_loss = train_one_epoch(run, task, epoch, clock)
        emissions.stop()
        state.kg_co2, state.kwh = emissions.kg_co2, emissions.kwh
        policy.check_ranks(epoch, run.accelerator.num_processes)
        end_epoch(run, epoch, train_loss, evaluate(run, task), records)
    emissions.close()
    summary = {**summarize(run, task, emissions), **(extra_summary or {})}
    if run.main:
        if run_dir.best.is_file():
            run.restore(run_dir.best)
        records.finish(summary, state.rows)
        if log.plots:
            task.finish(run_dir, run.accelerator.unwrap_model(run.model), val_set, state.rows)
    if log.log_with:
        run.accelerator.end_training()
    run.accelerator.wait_for_everyone()
    return summary
