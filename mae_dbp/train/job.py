"""A training job's run folder and config: choose it (never reuse a started run), save the config,
resume it, and leave nothing behind when a start fails.

The folder's files are named by :class:`mae_dbp.run_dir.RunDir`. Shared by every job (pretrain,
classify); decided on the main process so that all ranks agree on one folder.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from mae_dbp.config import LogConfig, checked, load_config, save_config
from mae_dbp.errors import UserInputError
from mae_dbp.process import process_state
from mae_dbp.run_dir import RunDir, refuse_existing
from mae_dbp.train.stop import Stopped

C = TypeVar("C")


def resolve_run_dir(log: LogConfig, out: str | Path | None, stem: str, device: str = "auto",
                    timeout: float | None = None) -> RunDir:
    """``out`` or ``log.dir/log.name`` (default: ``stem`` + time). Never a folder that holds a run."""
    from accelerate.utils import broadcast_object_list

    state = process_state(device, timeout)
    answer = [None, None]
    if state.is_main_process:
        if out is None:
            out = Path(log.dir) / (log.name or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
        run = RunDir(out)
        try:
            refuse_existing(run.path, (run.metrics, run.summary), force=None, resumable=True)  # >= 1 epoch done
            answer = [str(run.path), None]
        except FileExistsError as error:
            answer = [str(run.path), str(error)]
    if state.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1]:
        raise FileExistsError(answer[1])
    return RunDir(answer[0])


def cli_config(schema: type[C], config_path: str | None, resume: str | None, overrides: Iterable[str]) -> C:
    """The config a command line asks for: ``--config`` + overrides, or the resumed run's own config."""
    if resume is not None:
        if config_path is not None:
            raise UserInputError("--config and --resume exclude each other: a resumed run uses its own config.yaml "
                                 "(give key=value overrides to change it)")
        return RunDir(resume).require_resumable().read_config(schema, overrides)
    return load_config(schema, config_path, overrides)


def job_config(schema: type[C], config: C | None, resume: str | Path | None) -> C:
    """The checked config of a job: ``config``, or (``None`` when resuming) the run's own config.yaml."""
    if config is None and resume is None:
        raise UserInputError("a training job needs a config (or a run directory to resume)")
    return checked(config) if config is not None else cli_config(schema, None, str(resume), ())


@contextmanager
def open_run(config, out: str | Path | None, resume: str | Path | None, stem: str) -> Iterator[RunDir]:
    """The run directory (new or resumed) with ``config`` saved in it, for the ``with`` block that
    trains. A new run that fails before its first epoch ends (also Ctrl-C) leaves nothing behind:
    what was created in the folder is removed, and the folder if this start made it. A resumed
    run's config.yaml is left as it is here: the loop rewrites it only once ``last/`` has loaded
    (:func:`mae_dbp.train.setup.start_or_resume`), so overrides that do not fit the checkpoint change
    nothing in the folder."""
    device, timeout = config.train.device, config.train.collective_timeout
    main = process_state(device, timeout).is_main_process  # the first process state: starts the process group
    run = RunDir(resume).require_resumable() if resume is not None else resolve_run_dir(config.log, out, stem, device)
    existed = run.path.is_dir()
    before = set(run.path.iterdir()) if existed else set()
    try:
        if main and resume is None:
            run.path.mkdir(parents=True, exist_ok=True)
            save_config(config, run.config)
        yield run
    except Stopped:  # a signal: last/ was saved for --resume, keep it
        raise
    except BaseException:
        if main and resume is None and run.path.is_dir() and not run.started():
            for entry in set(run.path.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed and not any(run.path.iterdir()):
                run.path.rmdir()
        raise
