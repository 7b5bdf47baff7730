"""A run that fails before its first epoch finishes leaves no half-made run directory behind."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

FIRST_EPOCH_FILE = "metrics.csv"  # written when the first epoch ends: from then on the run is resumable


@contextmanager
def undo_failed_start(run_dir: Path | str, enabled: bool = True) -> Iterator[Path]:
    """Around the start of a run: on any exception (also Ctrl-C) before ``run_dir/metrics.csv``
    exists, remove what was created in ``run_dir`` meanwhile (entries that were there before are
    left alone) and the folder itself if this start created it; then re-raise.

    ``enabled``: False on non-main processes and for resumed runs. Usage::

        with undo_failed_start(run_dir, enabled=is_main_process and not resume):
            run_dir.mkdir(...); save_config(...); return fit(...)
    """
    run_dir = Path(run_dir)
    existed = run_dir.is_dir()
    before = set(run_dir.iterdir()) if existed else set()
    try:
        yield run_dir
    except BaseException:
        if enabled and run_dir.is_dir() and not (run_dir / FIRST_EPOCH_FILE).exists():
            for entry in set(run_dir.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            if not existed and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise
