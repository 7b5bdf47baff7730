"""The run directory of a training job: choose it (never reuse a started run), save the config,
resume it, and leave nothing behind when a start fails.

A run directory holds ``config.yaml`` (the resolved config, see :func:`mae_dbp.config.save_config`),
``last.pt`` / ``best.pt`` checkpoints, ``metrics.csv``, ``summary.json`` and plots. Shared by every
job (pretrain, classify); decided on the main process so that all ranks agree on one folder.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import torch
from accelerate import PartialState

from mae_dbp.config import LogConfig, checked, load_config, save_config
from mae_dbp.errors import UserInputError

C = TypeVar("C")
CONFIG_FILE = "config.yaml"
FIRST_EPOCH_FILE = "metrics.csv"  # written when the first epoch ends: from then on the run is resumable


def process_state() -> PartialState:
    """accelerate's process state, on CPU when there is no GPU.

    Must be the first accelerate object a job creates: on a CPU machine started with torchrun or
    ``accelerate launch --multi_gpu``, a state made without ``cpu=True`` gives separate
    world-size-1 processes instead of gloo ranks.
    """
    return PartialState(cpu=not torch.cuda.is_available())


def resolve_run_dir(log: LogConfig, out: str | Path | None, stem: str) -> Path:
    """``out`` or ``log.dir/log.name`` (default: ``stem`` + time). Never a folder that holds a run."""
    from accelerate.utils import broadcast_object_list

    state = process_state()
    answer = [None, None]
    if state.is_main_process:
        if out is None:
            out = Path(log.dir) / (log.name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
        out = Path(out)
        taken = (out / "metrics.csv").exists() or (out / "summary.json").exists()  # >= 1 epoch done
        answer = [str(out), f"run directory {out} already holds a run: use --resume {out} or another --out" if taken else None]
    if state.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1]:
        raise FileExistsError(answer[1])
    return Path(answer[0])


def resumable(run_dir: str | Path) -> Path:
    """``run_dir`` if it holds a started run (its last.pt), else a UserInputError."""
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file():
        raise UserInputError(f"--resume {run_dir}: no last.pt there (not a started run directory)")
    return run_dir


def cli_config(schema: type[C], config_path: str | None, resume: str | None, overrides: Iterable[str]) -> C:
    """The config a command line asks for: ``--config`` + overrides, or the resumed run's own config."""
    if resume is not None:
        if config_path is not None:
            raise UserInputError("--config and --resume exclude each other: a resumed run uses its own config.yaml "
                                 "(give key=value overrides to change it)")
        return load_config(schema, resumable(resume) / CONFIG_FILE, overrides)
    return load_config(schema, config_path, overrides)


def job_config(schema: type[C], config: C | None, resume: str | Path | None) -> C:
    """The checked config of a job: ``config``, or (``None`` when resuming) the run's own config.yaml."""
    if config is None and resume is None:
        raise UserInputError("a training job needs a config (or a run directory to resume)")
    return checked(config) if config is not None else cli_config(schema, None, str(resume), ())


@contextmanager
def open_run(config, out: str | Path | None, resume: str | Path | None, stem: str) -> Iterator[Path]:
    """The run directory (new or resumed) with ``config`` saved in it, for the ``with`` block that
    trains. A new run that fails before its first epoch ends (also Ctrl-C) leaves nothing behind:
    what was created in the folder is removed, and the folder if this start made it."""
    run_dir = resumable(resume) if resume is not None else resolve_run_dir(config.log, out, stem)
    main = process_state().is_main_process
    existed = run_dir.is_dir()
    before = set(run_dir.iterdir()) if existed else set()
    try:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, run_dir / CONFIG_FILE)
        yield run_dir
    except BaseException:
        if main and resume is None and run_dir.is_dir() and not (run_dir / FIRST_EPOCH_FILE).exists():
            for entry in set(run_dir.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
