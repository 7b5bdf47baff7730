"""Building a run: the accelerator on ``train.device``, per-rank seeds, loaders, optimizer + schedule,
and a fresh start or a resume.

    setup() = build_accelerator -> seed_ranks -> build_loaders -> optimizer_and_schedule
              -> accelerator.prepare -> start_or_resume

Randomness per rank: :func:`seed_ranks` seeds rank r with ``train.seed + r`` (python, numpy, torch,
CUDA: accelerate's ``set_seed(..., device_specific=True)``, as the reference MAE seeds), so mask
noise and augmentation differ between ranks; DataLoader workers draw their base seed from that
per-rank torch RNG (torch's default), so they differ too. The same on every rank: the initial
weights (built from ``train.seed`` before setup; DDP broadcasts them as well), the data order
(accelerate's seedable sampler, ``data_seed=train.seed``, then sharded), each DBP layer's subsample
generator (``decor.seed`` + the layer's index, not the rank: every rank keeps the same row
positions of its own images) and R, whose statistics ``decor.update`` all-reduces.
"""

from __future__ import annotations

import math
import sys
from datetime import timedelta

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import set_seed
from timm.optim import param_groups_weight_decay
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mae_dbp.config import LogConfig, TrainConfig, save_config
from mae_dbp.data.loader import build_train_loader
from mae_dbp.errors import UserInputError
from mae_dbp.optim import build_optimizer
from mae_dbp.run_dir import RunDir
from mae_dbp.train import checkpoints
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.process import cpu_only
from mae_dbp.train.schedules import WarmupCosine
from mae_dbp.train.state import Run, Task, WithIndex


def show_progress(setting: bool | None) -> bool:
    """``log.progress``, or (null) whether stderr is a terminal: no bars in logs and pipes."""
    return sys.stderr.isatty() if setting is None else setting


def build_accelerator(train_cfg: TrainConfig, log_cfg: LogConfig, run_dir: RunDir) -> Accelerator:
    """An Accelerator on ``train.device`` (CPU: gloo ranks under torchrun / accelerate launch);
    ``train.compile`` compiles the prepared model through accelerate's dynamo plugin (inductor)."""
    return Accelerator(
        cpu=cpu_only(train_cfg.device),
        dynamo_backend="inductor" if train_cfg.compile else None,  # None: accelerate's config / launch flag
        mixed_precision=train_cfg.mixed_precision,
        log_with=log_cfg.log_with,
        project_dir=str(run_dir.path),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_cfg.seed),
        # R is a buffer that update() keeps identical on all ranks: no per-forward broadcast needed
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False),
                         InitProcessGroupKwargs(timeout=timedelta(seconds=train_cfg.collective_timeout))],
    )


def seed_ranks(seed: int) -> None:
    """Seed this process with ``seed`` + its rank (python, numpy, torch, CUDA)."""
    set_seed(seed, device_specific=True)


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


def build_loaders(config, accelerator: Accelerator, train_set: Dataset,
                  val_set: Dataset) -> tuple[WithIndex, DataLoader, DataLoader, int, int]:
    """(indexed train set, train loader, val loader, micro-batch, optimizer steps per epoch); the
    train loader is ready to iterate (:func:`mae_dbp.data.loader.build_train_loader`), the val loader
    still to be prepared; sets the accelerator's gradient accumulation steps (:func:`batch_plan`)."""
    train_cfg = config.train
    micro, accelerator.gradient_accumulation_steps = batch_plan(train_cfg, accelerator.num_processes)
    indexed = train_set if isinstance(train_set, IterableDataset) else WithIndex(train_set)
    workers = config.data.num_workers
    train_loader, _ = build_train_loader(indexed, config.data, micro, accelerator, train_cfg.seed)
    val_loader = DataLoader(val_set, batch_size=micro, shuffle=False, num_workers=workers)
    per_epoch = len(train_loader) // accelerator.gradient_accumulation_steps  # per process: all step together
    if per_epoch == 0:
        raise UserInputError(f"train set has {len(train_set)} images, fewer than train.batch_size / one optimizer "
                             f"step (train.effective_batch={train_cfg.effective_batch})")
    return indexed, train_loader, val_loader, micro, per_epoch


def optimizer_and_schedule(train_cfg: TrainConfig, task: Task, per_epoch: int,
                           device: torch.device) -> tuple[torch.optim.Optimizer, WarmupCosine]:
    """``train.optimizer`` over timm's weight-decay groups (AdamW fused where torch has it for
    ``device``) at the peak lr ``base_lr x effective_batch / 256``, and its per-step warm-up + cosine
    schedule (:class:`~mae_dbp.train.schedules.WarmupCosine`, which the DBP policy reads too)."""
    peak = train_cfg.base_lr * train_cfg.effective_batch / 256
    schedule = WarmupCosine(peak, per_epoch * train_cfg.epochs, round(train_cfg.warmup_epochs * per_epoch), train_cfg.min_lr)
    groups = param_groups_weight_decay(task.model, train_cfg.weight_decay, no_weight_decay_list=task.no_weight_decay())
    optimizer = build_optimizer(groups, train_cfg.optimizer, peak, tuple(train_cfg.betas), device, train_cfg.optimizer_args)
    return optimizer, schedule


def start_or_resume(run: Run, resume: bool, config=None) -> None:
    """Register the loop state and the guard with accelerate, then load the run's ``last/`` state
    (``resume``; only then is ``config`` written to the run's config.yaml) or write the first one
    (the guard's roll-back point of epoch 1)."""
    acc = run.accelerator
    checkpoints.unwrapped_state_hooks(acc)
    acc.register_for_checkpointing(run.state, run.guard)
    if resume:
        checkpoints.resume(acc, run.run_dir.last, run.model)
        run.policy.resume(run.state.step)
        if run.main and config is not None:
            save_config(config, run.run_dir.config)
    else:
        checkpoints.save(acc, (run.run_dir.last,))


def setup(config, task: Task, policy: DecorPolicy, train_set: Dataset, val_set: Dataset, run_dir: RunDir,
          resume: bool) -> Run:
    """The :class:`Run` of ``config`` (see the module docstring), resumed from ``run_dir.last`` when asked."""
    train_cfg = config.train
    accelerator = build_accelerator(train_cfg, config.log, run_dir)
    seed_ranks(train_cfg.seed)
    indexed, train_loader, val_loader, micro, per_epoch = build_loaders(config, accelerator, train_set, val_set)
    optimizer, schedule = optimizer_and_schedule(train_cfg, task, per_epoch, accelerator.device)
    model, optimizer, val_loader = accelerator.prepare(task.model, optimizer, val_loader)
    run = Run(accelerator, model, optimizer, train_loader, val_loader, indexed, schedule,
              InstabilityGuard(train_cfg.guard), policy, run_dir, train_cfg, lr=schedule.peak,
              progress=show_progress(config.log.progress))
    policy.start(accelerator.gradient_accumulation_steps, per_epoch, schedule.total_steps)
    start_or_resume(run, resume, config)
    run.say(f"effective batch {train_cfg.effective_batch} = {accelerator.num_processes} process(es) x {micro} images "
            f"x {accelerator.gradient_accumulation_steps} accumulation step(s); {train_cfg.optimizer}, peak lr "
            f"{schedule.peak:.3g} = train.base_lr {train_cfg.base_lr:g} x {train_cfg.effective_batch} / 256")
    return run
