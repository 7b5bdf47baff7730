"""Run checkpoints as accelerate state folders: ``last/`` and ``best/`` of the run directory
(:class:`~mae_dbp.run_dir.RunDir` names them).

Each folder is what :meth:`accelerate.Accelerator.save_state` writes:

    pytorch_model.bin        the plain (unwrapped: no DDP ``module.``, no ``_orig_mod.``) model
                             state_dict, R and each DBP layer's subsample state included
    optimizer.bin            AdamW's state
    random_states_<rank>.pkl every rank's python / numpy / torch (/ CUDA) RNG state
    custom_checkpoint_<i>.pkl the objects registered with ``register_for_checkpointing``, in
                             order: 0 the loop state (epochs, steps, best, rows), 1 the guard

so a resume (:func:`resume`, ``Accelerator.load_state``) gives every rank back its own RNG and
continues bit-exactly, while the guard's roll-back (:func:`restore_weights`) takes only model and
optimizer. Writing is atomic for the folder as a whole: all ranks write into ``.<name>.tmp``, then
the main process fsyncs it and swaps it in (``<name>`` -> ``.<name>.old``, ``.<name>.tmp`` ->
``<name>``, remove ``.<name>.old``). A kill at any moment leaves the previous or the new state
readable: between the two renames only ``.<name>.old`` exists, and
:func:`~mae_dbp.run_dir.saved_checkpoint` falls back to it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import WEIGHTS_NAME
from torch import nn

from mae_dbp.errors import UserInputError
from mae_dbp.files import load_checkpoint
from mae_dbp.run_dir import CHECKPOINT_MODEL, saved_checkpoint

MODEL_FILE = CHECKPOINT_MODEL  # what save_state names the model file (safe_serialization=False)
OPTIMIZER_FILE = "optimizer.bin"
LOOP_FILE = "custom_checkpoint_0.pkl"  # the first object registered for checkpointing: the loop state
assert MODEL_FILE == WEIGHTS_NAME


def model_state(checkpoint: str | Path) -> dict:
    """The model state_dict of checkpoint folder ``checkpoint`` (weights only, on the CPU)."""
    return load_checkpoint(Path(checkpoint) / MODEL_FILE)


def loop_state(checkpoint: str | Path) -> dict:
    """The loop state saved in checkpoint folder ``checkpoint`` (epoch, step, best_val, ...); {} if none."""
    path = Path(checkpoint) / LOOP_FILE
    return load_checkpoint(path) if path.is_file() else {}


def plain_model(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The model itself: without accelerate's DDP and ``torch.compile`` wrappers."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def unwrapped_state_hooks(accelerator: Accelerator) -> None:
    """Make ``save_state`` / ``load_state`` write and read the plain model's keys (the same file
    for 1 or N processes, compiled or not, and what export reads)."""

    def save_plain(models: list, weights: list, _output_dir: str) -> None:
        weights[:] = [plain_model(accelerator, model).state_dict() for model in models]

    def load_plain(models: list, _input_dir: str) -> None:
        models[:] = [plain_model(accelerator, model) for model in models]

    accelerator.register_save_state_pre_hook(save_plain)
    accelerator.register_load_state_pre_hook(load_plain)


def _fsync_tree(path: Path) -> None:
    for entry in path.iterdir():
        with open(entry, "rb") as handle:
            os.fsync(handle.fileno())


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace folder ``target`` by ``tmp`` (see the module docstring); main process only."""
    old = target.with_name(f".{target.name}.old")
    if old.exists() and target.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _link_copy(source: Path, target: Path) -> None:
    """``target``: a folder with the files of ``source`` (hard links where the filesystem allows)."""
    target.mkdir()
    for entry in source.iterdir():
        try:
            os.link(entry, target / entry.name)
        except OSError:
            shutil.copy2(entry, target / entry.name)


def save(accelerator: Accelerator, folders: tuple[Path, ...]) -> None:
    """The accelerator's whole state (model, optimizer, every rank's RNG, registered objects) as
    the checkpoint folders ``folders`` (e.g. a RunDir's ``last``, ``best``), atomically; call on
    every rank."""
    tmp = {folder: folder.with_name(f".{folder.name}.tmp") for folder in folders}
    if accelerator.is_main_process:
        for path in tmp.values():
            shutil.rmtree(path, ignore_errors=True)  # left by a killed writer
    accelerator.wait_for_everyone()
    first = tmp[folders[0]]
    accelerator.save_state(str(first), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(first)
        for folder in folders[1:]:
            _link_copy(first, tmp[folder])
        for folder in folders:
            _swap_in(tmp[folder], folder)
    accelerator.wait_for_everyone()


def resume(accelerator: Accelerator, folder: Path) -> Path:
    """Load the state of checkpoint ``folder`` into the accelerator (every rank its own RNG); returns
    the folder read (``folder``, or its ``.old`` twin after a cut swap)."""
    path = saved_checkpoint(folder)
    if path is None:
        raise UserInputError(f"--resume {folder.parent}: no {folder.name}/ checkpoint there (not a started run directory)")
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # a truncated or foreign file
        raise UserInputError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return path


def restore_weights(accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    folder: Path) -> None:
    """Model (and ``optimizer``, unless None) from checkpoint ``folder`` only: the guard's roll-back,
    where RNG, loop state and the guard's own state go on."""
    path = saved_checkpoint(folder)
    if path is None:
        raise UserInputError(f"{folder.parent}: no {folder.name}/ checkpoint to restore")
    plain_model(accelerator, model).load_state_dict(model_state(path))
    if optimizer is not None:
        optimizer.load_state_dict(load_checkpoint(path / OPTIMIZER_FILE))
