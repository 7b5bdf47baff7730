"""The accelerate training loop shared by MAE pretraining and the classification zoo.

Split as facebookresearch/mae splits it: :func:`~mae_dbp.train.setup.setup` (accelerator, per-rank
seeds, loaders, AdamW, resume), :func:`train_one_epoch`, :func:`evaluate`, :func:`end_epoch`
(records, guard, checkpoints) and :func:`fit`, which strings them together. A :class:`Task` says
what is trained and how a batch becomes a loss; a :class:`~mae_dbp.train.decor_policy.DecorPolicy`
does the R updates after each optimizer step. Per-step warm-up + cosine lr, accumulation to
``train.effective_batch``, ``best/`` and ``last/`` checkpoints (accelerate state folders, atomic,
resumable with every rank's RNG: :mod:`mae_dbp.train.checkpoints`), metrics.csv, emissions and
summary.json. Runs unchanged under ``accelerate launch``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import RunDir, saved_checkpoint
from mae_dbp.train import checkpoints
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.emissions import TrainingEmissions
from mae_dbp.train.guard import non_finite_rows
from mae_dbp.train.records import RunRecords
from mae_dbp.train.setup import setup
from mae_dbp.train.state import Run, Task, WithIndex

__all__ = ["Task", "WithIndex", "fit", "train_one_epoch", "evaluate", "end_epoch"]


def _any_rank(accelerator: Accelerator, flag: bool) -> bool:
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).sum() > 0)


def _out_of_time(accelerator: Accelerator, seconds: float, budget: float) -> bool:
    """The main process's clock decides, so every rank stops after the same step."""
    return bool(broadcast(torch.tensor([float(seconds >= budget)], device=accelerator.device)).item())


def non_finite_loss(run: Run, task: Task, batch: Any, index: torch.Tensor, epoch: int) -> None:
    """A non-finite loss: non-finite inputs are a data error naming the files; otherwise the guard
    restores ``last/`` and calms R down (or, with the guard off, the run stops)."""
    rows = non_finite_rows(task.inputs(batch))
    if _any_rank(run.accelerator, bool(rows)):
        names = run.train_set.names([int(index[r]) for r in rows]) or ["(on another process)"]
        raise UserInputError(f"non-finite model inputs (nan/inf) from {', '.join(names[:5])}: fix or remove the "
                             f"file(s), or check data.mean/std")
    if not run.guard.settings.enabled:
        raise FloatingPointError(f"non-finite training loss at step {run.state.step} (train.guard.enabled is false)")
    checkpoints.restore_weights(run.accelerator, run.model, run.optimizer, run.run_dir.last)
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
    """Record the epoch, keep the best, let the guard roll back to ``best/``, write the checkpoints."""
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
        checkpoints.restore_weights(run.accelerator, run.model, run.optimizer, run.run_dir.best)
        event = run.guard.record_restore("validation loss rose past tolerance", epoch, state.step)
        run.say(f"mae-dbp guard: {event}")
    run_dir = run.run_dir
    checkpoints.save(run.accelerator, (run_dir.last, run_dir.best) if improved else (run_dir.last,))


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
        if saved_checkpoint(run_dir.best) is not None:
            checkpoints.restore_weights(run.accelerator, run.model, None, run_dir.best)
        records.finish(summary, state.rows)
        if log.plots:
            task.finish(run_dir, checkpoints.plain_model(run.accelerator, run.model), val_set, state.rows)
    if log.log_with:
        run.accelerator.end_training()
    run.accelerator.wait_for_everyone()
    return summary
