"""The accelerate training loop shared by MAE pretraining and the classification zoo.

Split as facebookresearch/mae splits it: :func:`~mae_dbp.train.setup.setup` (accelerator, per-rank
seeds, loaders, optimizer, resume), :func:`train_one_epoch`, :func:`evaluate`, :func:`end_epoch`
(records, guard, checkpoints) and :func:`fit`, which strings them together. A :class:`Task` says
what is trained and how a batch becomes a loss; a :class:`~mae_dbp.train.decor_policy.DecorPolicy`
does the R updates after each optimizer step. Per-step warm-up + cosine lr, accumulation to
``train.effective_batch``, ``best/`` and ``last/`` checkpoints (accelerate state folders, atomic,
resumable with every rank's RNG: :mod:`mae_dbp.train.checkpoints`), metrics.csv, emissions and
summary.json. Runs unchanged under ``accelerate launch``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from accelerate import Accelerator
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import RunDir, saved_checkpoint
from mae_dbp.train import checkpoints, stop
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.emissions import TrainingEmissions
from mae_dbp.train.records import RunRecords
from mae_dbp.train.setup import setup
from mae_dbp.train.state import Run, Task, WithIndex
from mae_dbp.train.stop import StopRequest

__all__ = ["Task", "WithIndex", "fit", "train_one_epoch", "evaluate", "end_epoch"]
GPU_CHECK_EVERY = 10  # train.check_every: null on a GPU


# --- the step's numbers, kept on the device and read to the host once per check interval ------
# Reading a CUDA tensor (``float(loss)``, ``.item()``, ``.tolist()``) makes the host wait for the GPU
# to finish everything queued, so the loop reads nothing per micro-batch: :meth:`StepMeter.add`
# adds the loss (finite ones, and a count of the non-finite) and the number of input rows holding a
# NaN/Inf to device tensors; :meth:`StepMeter.read` all-reduces them over the ranks together with
# the main process's "out of time" flag and reads the five numbers in one ``.tolist()``. The loop
# calls it every ``train.check_every`` optimizer steps and at the end of the epoch.


@dataclass
class Reading:
    """One check interval's numbers, summed over the ranks."""

    loss_sum: float  # sum of the finite micro-batch losses
    finite: int  # micro-batches with a finite loss
    non_finite: int  # micro-batches with a nan / inf loss
    bad_rows: int  # input rows holding a nan / inf
    out_of_time: bool  # the main process's clock passed train.max_train_seconds
    stop_requested: bool = False  # a rank got SIGTERM / SIGINT / SIGUSR1 (mae_dbp.train.stop)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.finite if self.finite else math.nan


class StepMeter:
    """Device-side sums of the micro-batches since the last :meth:`read` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums = torch.zeros(4, device=device)
        self._bad_index: list[torch.Tensor] = []  # per micro-batch: dataset index of a bad row, else -1

    def add(self, loss: torch.Tensor, inputs: torch.Tensor, index: torch.Tensor) -> None:
        """Count one micro-batch: its (scalar) loss, and which of its input rows (B, ...) hold a nan / inf."""
        loss = loss.detach().float().reshape(())
        finite = torch.isfinite(loss)
        bad = ~torch.isfinite(inputs.detach()).flatten(1).all(1)
        self._sums += torch.stack([torch.where(finite, loss, 0.0), finite.float(), (~finite).float(), bad.sum().float()])
        self._bad_index.append(torch.where(bad, index.to(bad.device), -1))

    def read(self, accelerator: Accelerator, out_of_time: bool = False, stop_requested: bool = False) -> Reading:
        """The interval's numbers over all ranks (one all-reduce, one host read); starts a new interval.
        ``stop_requested``: this rank got a stop signal (any rank's makes every rank stop)."""
        flags = torch.tensor([float(out_of_time and accelerator.is_main_process), float(stop_requested)], device=self.device)
        values = torch.cat([self._sums, flags])
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, "sum")
        loss_sum, finite, non_finite, bad_rows, stop, signalled = values.tolist()
        self._sums.zero_()
        return Reading(loss_sum, int(finite), int(non_finite), int(bad_rows), stop > 0, signalled > 0)

    def bad_indices(self) -> list[int]:
        """Dataset indices of this rank's input rows with a nan / inf since the last :meth:`clear` (a host read)."""
        if not self._bad_index:
            return []
        found = torch.cat(self._bad_index)
        return [int(i) for i in found[found >= 0].tolist()]

    def clear(self) -> None:
        """Forget the bad-row indices kept since the last check (after a check found none)."""
        self._bad_index.clear()


def check_every(run: Run) -> int:
    """Optimizer steps between the loop's host reads: ``train.check_every``, or (null) 1 on the CPU,
    where a read costs nothing, and :data:`GPU_CHECK_EVERY` on a GPU."""
    every = run.train_cfg.check_every
    return every if every is not None else (1 if run.accelerator.device.type == "cpu" else GPU_CHECK_EVERY)


def non_finite_loss(run: Run, meter: StepMeter, reading: Reading, epoch: int) -> None:
    """A non-finite loss in the check interval: non-finite inputs are a data error naming the files;
    otherwise the guard restores model and optimizer from ``last/`` and calms R down (or, with the
    guard off, the run stops)."""
    if reading.bad_rows:
        names = run.train_set.names(meter.bad_indices())
        raise UserInputError(f"non-finite model inputs (nan/inf) from {', '.join((names or ['(on another process)'])[:5])}"
                             ": fix or remove the file(s), or check data.mean/std")
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


def epoch_loader(run: Run, epoch: int) -> Any:
    """The train loader of ``epoch``: its seeded order (also after a resume), without the
    micro-batches a run stopped mid-epoch had done (``state.epoch_batches``), so a resume goes on
    where it stopped, with the same random crops (:meth:`WithIndex.replay_rng`)."""
    run.train_loader.set_epoch(epoch)  # the seedable sampler's shuffle of this epoch, also after a resume
    done = run.state.epoch_batches
    if not done:
        return run.train_loader
    if not hasattr(run.train_loader, "skip_batches"):  # a crop stream (its own seeded RNG): read and dropped
        return itertools.islice(run.train_loader, done, None)
    loader = run.accelerator.skip_first_batches(run.train_loader, done)  # skips by index, loads nothing
    loader.set_epoch(epoch)
    before = checkpoints.rank_state(saved_checkpoint(run.run_dir.last), run.accelerator.process_index).get("rng")
    if before is not None and isinstance(run.train_set, WithIndex):  # data.num_workers 0: crops drawn here
        run.train_set.replay_rng({0: before, run.train_loader.total_batch_size // run.accelerator.num_processes: torch.get_rng_state()})
    return loader


class _RngBefore:
    """Iterate ``loader``, keeping torch's RNG state from before each batch was asked for (``.state``)."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.state = loader, None

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            self.state = torch.get_rng_state()
            try:
                batch = next(batches)
            except StopIteration:
                return
            yield batch


def train_one_epoch(run: Run, task: Task, epoch: int, clock: Callable[[], float] = time.perf_counter,
                    request: StopRequest | None = None) -> float:
    """One pass over the training data (or until the time budget); returns the mean loss over ranks.
    ``clock`` (seconds) times it into ``train_seconds`` (e.g. ``time.process_time`` for CPU seconds).

    Nothing is read to the host per micro-batch: losses and input checks add up on the device
    (:class:`StepMeter`) and are read once at the last micro-batch of every
    ``check_every``-th optimizer step and of the epoch, before its backward. That read feeds the
    progress bar and the epoch's loss, decides the time budget (the main process's clock, so every
    rank stops after the same step) and lets the guard act: a non-finite loss in the interval skips
    this step and restores ``last/``; the steps between it and the check are lost, so with
    ``check_every`` k a bad batch costs up to k steps (1 step at k = 1, the CPU default). A stop
    signal (``request``, :mod:`mae_dbp.train.stop`) seen at a read ends the epoch after that step, with
    its position kept in ``state.epoch_batches`` (the loss so far too) for a resume.
    """
    acc, budget, every, state = run.accelerator, run.train_cfg.max_train_seconds, check_every(run), run.state
    run.model.train()
    done, loader = state.epoch_batches, _RngBefore(epoch_loader(run, epoch))
    meter, start = StepMeter(acc.device), clock()
    total, count = (state.epoch_loss_sum, state.epoch_loss_count) if done else (0.0, 0)
    batches = len(run.train_loader)
    bar = tqdm(loader, desc=f"epoch {epoch}/{run.train_cfg.epochs}", disable=not (run.main and run.progress),
               leave=False, initial=done, total=batches)
    state.epoch_batches = 0
    for number, (batch, index) in enumerate(bar, done + 1):
        with acc.accumulate(run.model):
            loss = task.train_loss(run.model, batch)
            meter.add(loss, task.inputs(batch), index)
            if number < batches and not (acc.sync_gradients and (run.state.step + 1) % every == 0):
                optimizer_step(run, loss)
                continue
            reading = meter.read(acc, bool(budget) and run.state.train_seconds + clock() - start >= budget,
                                 request is not None and request.requested)
            total, count = total + reading.loss_sum, count + reading.finite
            if reading.non_finite:
                run.optimizer.zero_grad(set_to_none=True)
                non_finite_loss(run, meter, reading, epoch)
            else:
                optimizer_step(run, loss)
            meter.clear()
        if run.main:
            bar.set_postfix(loss=f"{reading.mean_loss:.4f}", lr=f"{run.lr:.2e}")
        if reading.out_of_time:
            break
        if reading.stop_requested and number < batches:
            state.epoch_batches, state.epoch_loss_sum, state.epoch_loss_count = number, total, count
            run.stop_rng = loader.state  # this rank's RNG before the loader read one batch ahead
            break
    run.state.train_seconds += clock() - start
    return total / count if count else math.nan


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
    with stop.catching() as request:  # SIGTERM / SIGINT / SIGUSR1: save last/ and stop (mae_dbp.train.stop)
        return _fit(config, task, policy, train_set, val_set, run_dir, resume, extra_summary, clock, request)


def _fit(config, task, policy, train_set, val_set, run_dir, resume, extra_summary, clock, request) -> dict:
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
        train_loss = train_one_epoch(run, task, epoch, clock, request)
        emissions.stop()
        state.kg_co2, state.kwh = emissions.kg_co2, emissions.kwh
        if state.epoch_batches:  # stopped by a signal mid-epoch
            stop.save_and_stop(run, request, emissions)
        policy.check_ranks(epoch, run.accelerator.num_processes)
        end_epoch(run, epoch, train_loss, {**evaluate(run, task), **task.probe(run, epoch)}, records)
        if state.epoch < stop_epoch and stop.agreed(run.accelerator, request):  # a signal during validation / save
            stop.save_and_stop(run, request, emissions, saved=True)
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
