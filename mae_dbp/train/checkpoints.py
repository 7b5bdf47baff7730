"""Run checkpoints as accelerate state folders: ``last/`` and ``best/`` of the run directory
(:class:`~mae_dbp.run_dir.RunDir` names them).

Each folder is what :meth:`accelerate.Accelerator.save_state` writes:

    pytorch_model.bin        the plain (unwrapped: no DDP ``module.``, no ``_orig_mod.``) model
                             state_dict, R and each DBP layer's subsample state included
    optimizer.bin            AdamW's state
    random_states_<rank>.pkl every rank's python / numpy / torch (/ CUDA) RNG state
    custom_checkpoint_<i>.pkl the objects registered with ``register_for_checkpointing``, in
                             order: 0 the loop state (epochs, steps, best, rows), 1 the guard
    checksums.sha256         sha256 of every file above (``sha256sum -c`` reads it): a truncated or
                             altered file is named on ``--resume`` and ``export`` (:func:`verify`)

so a resume (:func:`resume`, ``Accelerator.load_state``) gives every rank back its own RNG and
continues bit-exactly, while the guard's roll-back (:func:`restore_weights`) takes only model and
optimizer. Writing is atomic for the folder as a whole: all ranks write into ``.<name>.tmp``, then
the main process fsyncs it and swaps it in (``<name>`` -> ``.<name>.old``, ``.<name>.tmp`` ->
``<name>``, remove ``.<name>.old``). A kill at any moment leaves the previous or the new state
readable: between the two renames only ``.<name>.old`` exists, and
:func:`~mae_dbp.run_dir.saved_checkpoint` falls back to it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import WEIGHTS_NAME
from torch import nn

from mae_dbp.errors import UserInputError, write_failed
from mae_dbp.files import load_checkpoint
from mae_dbp.run_dir import CHECKPOINT_MODEL, saved_checkpoint

MODEL_FILE = CHECKPOINT_MODEL  # what save_state names the model file (safe_serialization=False)
OPTIMIZER_FILE = "optimizer.bin"
LOOP_FILE = "custom_checkpoint_0.pkl"  # the first object registered for checkpointing: the loop state
RANK_FILE = "rank_state_{rank}.pt"  # a mid-epoch stop: each rank's RNG before its last batch was read
CHECKSUMS = "checksums.sha256"  # sha256sum's format: "<hex>  <name>" per file of the folder
assert MODEL_FILE == WEIGHTS_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    """``folder/checksums.sha256``: the sha256 of every file in checkpoint ``folder``."""
    lines = [f"{_sha256(entry)}  {entry.name}\n" for entry in sorted(folder.iterdir())
             if entry.is_file() and entry.name != CHECKSUMS]
    (folder / CHECKSUMS).write_text("".join(lines))


def way_out(folder: Path) -> str:
    """What to do when checkpoint ``folder`` cannot be read: export ``last/`` for a bad ``best/``,
    resume from a copy of ``best/`` for a bad ``last/``, or restart."""
    if folder.name.lstrip(".").startswith("best"):
        return f"export {folder.with_name('last')} instead, or restart the run"
    return f"resume from the best epoch instead (replace {folder} by a copy of {folder.with_name('best')}), or restart the run"


def _first_line(error: BaseException) -> str:
    """``TypeName: first line of the message`` of a load error."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def damaged(path: Path, why: str) -> UserInputError:
    """The one line for a damaged checkpoint file ``path``, with the way out."""
    return UserInputError(f"{path}: damaged checkpoint file ({why}); {way_out(path.parent)}")


def verify(folder: Path) -> None:
    """Check the files of checkpoint ``folder`` against its checksums.sha256 (folders written before
    checksums existed pass): a missing, truncated or altered file is a :func:`damaged` error naming it."""
    manifest = Path(folder) / CHECKSUMS
    if not manifest.is_file():
        return
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        path = Path(folder) / name
        if not path.is_file():
            raise damaged(path, "missing")
        if _sha256(path) != digest:
            raise damaged(path, "its sha256 differs from checksums.sha256: truncated or altered")


def _shape(value) -> tuple:
    return tuple(value.shape) if hasattr(value, "shape") else ()


def _decor_key(key: str) -> bool:
    """A DBP layer's own state (R, its subsample statistics): present on one side only when a warm
    start (``decor.until``) fused R before or after the checkpoint; the policy's load hook handles it."""
    return key.endswith(".R") or ".subsample." in key


def check_fits(model: nn.Module, folder: Path, source: str, advice: str = "") -> None:
    """Refuse (one line) when the model state in checkpoint ``folder`` does not fit ``model``: the
    first key whose shape differs (both shapes), or that only one side has. ``source`` says what
    built the model (e.g. "the run's config with these overrides"); ``advice``: the way out."""
    file = Path(folder) / MODEL_FILE
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file
        raise damaged(file, _first_line(error)) from None
    now, tail = model.state_dict(), f" ({advice})" if advice else ""
    head = f"{file} does not fit the model of {source}"
    for key, value in now.items():
        if key not in saved and _decor_key(key):  # a DBP warm start fused after its switch: loads either way
            continue
        if key not in saved:
            raise UserInputError(f"{head}: it has no {key} (shape {_shape(value)} in the model){tail}")
        if _shape(saved[key]) != _shape(value):
            raise UserInputError(f"{head}: {key} has shape {_shape(saved[key])} in the checkpoint, {_shape(value)} in the model{tail}")
    extra = [key for key in saved if key not in now and not _decor_key(key)]
    if extra:
        raise UserInputError(f"{head}: the model has no {extra[0]} (shape {_shape(saved[extra[0]])} in the checkpoint){tail}")


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


def rank_state(folder: Path, rank: int) -> dict:
    """What :func:`save` was given as ``rank_state`` on process ``rank`` ({} if nothing)."""
    path = Path(folder) / RANK_FILE.format(rank=rank)
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


def save(accelerator: Accelerator, folders: tuple[Path, ...], rank_state: dict | None = None) -> None:
    """The accelerator's whole state (model, optimizer, every rank's RNG, registered objects) as
    the checkpoint folders ``folders`` (e.g. a RunDir's ``last``, ``best``), atomically; call on
    every rank; ``rank_state``: tensors of this rank to keep as well (``rank_state_<rank>.pt``:
    a stopped run's place in its epoch, :mod:`mae_dbp.train.stop`). A write that fails (full disk, file-size limit, read-only folder) on any rank
    removes the temporary folders, leaves the previous checkpoints as they were, and raises an
    OSError naming the path and the OS error on every rank."""
    tmp = {folder: folder.with_name(f".{folder.name}.tmp") for folder in folders}
    if accelerator.is_main_process:
        for path in tmp.values():
            shutil.rmtree(path, ignore_errors=True)  # left by a killed writer
    accelerator.wait_for_everyone()
    first = tmp[folders[0]]
    failed: BaseException | None = None
    try:
        accelerator.save_state(str(first), safe_serialization=False)
        if rank_state:
            torch.save(rank_state, first / RANK_FILE.format(rank=accelerator.process_index))
    except Exception as error:  # ENOSPC / EFBIG / EACCES, or torch's zip writer's RuntimeError
        failed = error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and failed is None:
        try:
            write_checksums(first)
            _fsync_tree(first)
            for folder in folders[1:]:
                _link_copy(first, tmp[folder])
        except Exception as error:
            failed = error
    flags = accelerator.gather(torch.tensor([failed is not None], device=accelerator.device))
    if bool(flags.any()):
        if accelerator.is_main_process:
            for path in tmp.values():
                shutil.rmtree(path, ignore_errors=True)
        accelerator.wait_for_everyone()
        kept = "; the previous checkpoint is kept" if any(saved_checkpoint(f) for f in folders) else ""
        if failed is not None:
            error = write_failed(first, failed)
            raise OSError(error.errno, f"{error.strerror} while writing the new {folders[0].name}/{kept}",
                          str(folders[0])) from None
        raise OSError(errno.EIO, f"checkpoint write failed on another process (its error is above){kept}", str(folders[0]))
    if accelerator.is_main_process:
        for folder in folders:
            _swap_in(tmp[folder], folder)
    accelerator.wait_for_everyone()


def resume(accelerator: Accelerator, folder: Path, model: nn.Module | None = None) -> Path:
    """Load the state of checkpoint ``folder`` into the accelerator (every rank its own RNG); returns
    the folder read (``folder``, or its ``.old`` twin after a cut swap). Its files are checked first
    (:func:`verify`), and that its model state fits ``model`` (:func:`check_fits`)."""
    path = saved_checkpoint(folder)
    if path is None:
        raise UserInputError(f"--resume {folder.parent}: no {folder.name}/ checkpoint there (not a started run directory)")
    verify(path)
    if model is not None:
        check_fits(plain_model(accelerator, model), path, "the run's config with these overrides",
                   "undo the override that changes the model, or start a new run with --config and --out")
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # a truncated or foreign file
        raise UserInputError(f"{path}: not a readable checkpoint ({_first_line(error)}); {way_out(path)}") from None
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
