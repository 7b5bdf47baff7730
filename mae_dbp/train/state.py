"""What the phases of one run share: the :class:`Task` a job trains, the :class:`LoopState` a
resume continues from, the dataset wrapper that names files, and :class:`Run`, the bundle the
loop's phases pass around (:mod:`mae_dbp.train.setup` builds it, :mod:`mae_dbp.train.loop` runs it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mae_dbp.config import TrainConfig
from mae_dbp.run_dir import RunDir
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
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

    def probe(self, run: "Run", epoch: int) -> dict:
        """Extra numbers of an epoch's metrics row after validation, measured on the main process
        without drawing from the training RNG (e.g. the online linear probe's score)."""
        return {}

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
    # a run stopped by a signal mid-epoch (mae_dbp.train.stop): micro-batches of epoch ``epoch + 1``
    # done on each rank, and that epoch's loss sum / count so far; 0 at an epoch's end
    epoch_batches: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0

    # registered with accelerate (register_for_checkpointing): saved and loaded by save_state / load_state
    def state_dict(self) -> dict:
        return copy.deepcopy(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class WithIndex(Dataset):
    """``(dataset[i], i)``: lets the loop name the files of a batch with non-finite inputs."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._replay: dict[int, torch.Tensor] = {}  # items read from now -> torch RNG state to set first
        self._read = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def replay_rng(self, states: dict[int, torch.Tensor]) -> None:
        """Set torch's (CPU) RNG to ``states[n]`` just before the n-th item read from now: a run
        resumed mid-epoch reads its next batch with the random crops of the run never stopped
        (the loader reads one batch ahead, so that batch's draws came before the saved RNG state)."""
        self._replay, self._read = dict(states), 0

    def __getitem__(self, index: int):
        if self._replay:
            state = self._replay.pop(self._read, None)
            self._read += 1
            if state is not None:
                torch.set_rng_state(state)
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
    progress: bool = True  # a progress bar per epoch (main process)
    stop_rng: torch.Tensor | None = None  # a stop mid-epoch: torch's RNG before the last batch was read

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def say(self, text: str) -> None:
        if self.main:
            tqdm.write(text)
