"""The run directory of a training job: choose it (never reuse a started run), save the config, resume.

A run directory holds ``config.yaml`` (the resolved config, see :func:`mae_dbp.config.save_config`),
``last.pt`` / ``best.pt`` checkpoints, ``metrics.csv``, ``summary.json`` and plots. Shared by every
job (pretrain, classify); decided on the main process so that all ranks agree on one folder.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Iterable, TypeVar

import torch
from accelerate import PartialState

from mae_dbp.config import LogConfig, load_config, save_config
from mae_dbp.errors import UserInputError

C = TypeVar("C")
CONFIG_FILE = "config.yaml"


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


def start_run(config, out: str | Path | None, resume: str | Path | None, stem: str) -> Path:
    """The run directory of a new run or of the run being resumed, with ``config`` saved in it."""
    run_dir = resumable(resume) if resume is not None else resolve_run_dir(config.log, out, stem)
    if process_state().is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)
    return run_dir
