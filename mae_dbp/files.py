"""Atomic files (checkpoints, CSVs, JSON, configs, exports): a kill during a write leaves the
previous file loadable. Used by every layer that writes results: config, train, export, bench,
segmentation.

The temporary file ``.<name>.<pid>-<random>.tmp`` is created beside the target with the usual
permissions (0666 minus the umask, like ``open()``; not mkstemp's 0600), and given them back if
the writer changed them (safetensors' ``save_file`` leaves 0600), so the finished file can be
shared like any other. A crash can leave such a temporary behind; the next write of the same
target removes the ones older than the current process whose writer is gone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mae_dbp.errors import UserInputError

if TYPE_CHECKING:
    import torch

_PROCESS_START = time.time()  # temporaries older than this were not written by this process
_SWEPT: set[Path] = set()  # targets whose stale temporaries this process already removed


def _writer_alive(tmp: Path) -> bool:
    """Whether the process whose id is in ``.<name>.<pid>-<random>.tmp`` still runs (on this host)."""
    pid = tmp.name.rsplit(".", 2)[-2].split("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` siblings of ``path`` left by crashed writers: modified before this
    process started and not belonging to a live process. Returns what was removed."""
    removed = []
    for tmp in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < _PROCESS_START and not _writer_alive(tmp):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:  # another process cleaned it first
            continue
    return removed


def _create_temporary(path: Path) -> Path:
    """A new empty file beside ``path`` with the umask's usual permissions (an OSError names ``path``)."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as error:  # a read-only folder, a full disk: name what the user asked for
            raise OSError(error.errno, error.strerror, str(path)) from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() not in _SWEPT:
        remove_stale_temporaries(path)
        _SWEPT.add(path.resolve())
    tmp = _create_temporary(path)
    try:
        _fill_temporary(tmp, write)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fill_temporary(tmp: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, then the umask's permissions kept (0666 minus the umask, as the temporary was
    created) and the file fsynced, so that renaming it over its path publishes a complete file."""
    mode = tmp.stat().st_mode & 0o777
    write(tmp)
    if tmp.stat().st_mode & 0o777 != mode:
        tmp.chmod(mode)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write_all(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write several files as one: each ``write(tmp)`` into a temporary beside its path, all fsynced,
    and only then renamed over their paths (an export's model + config). A failing write removes
    every temporary, leaves the previous files as they were, and raises an OSError naming the file
    and the OS error (:func:`mae_dbp.errors.write_failed`)."""
    from mae_dbp.errors import write_failed

    done: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = done[path] = _create_temporary(path)
            try:
                _fill_temporary(tmp, write)
            except Exception as error:
                raise write_failed(path, error) from None
        for path, tmp in done.items():
            os.replace(tmp, path)
    finally:
        for tmp in done.values():
            if tmp.exists():
                tmp.unlink()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """torch.save ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    import torch  # here, so that the JSON / CSV writers (data tools) do not load torch

    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (weights-only: no code is unpickled)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UserInputError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None


def json_safe(value: Any) -> Any:
    """``value`` (numbers, dicts, lists) with every NaN/Inf float replaced by None: JSON has no
    NaN, so they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_writer(data: dict | list) -> Callable[[Path], None]:
    """A writer (for :func:`atomic_write` / :func:`atomic_write_all`) of ``data`` as indented JSON,
    NaN/Inf as null."""
    return lambda tmp: tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n")


def write_json(path: Path, data: dict | list) -> None:
    """``data`` as indented JSON (NaN/Inf as null), atomically."""
    atomic_write(path, json_writer(data))


def write_csv(path: Path, rows: list[dict]) -> None:
    """All rows (their union of columns, in first-seen order), rewritten atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def move_csv_rows(source: Path, target: Path) -> None:
    """Append the rows of CSV ``source`` to CSV ``target`` (atomically; the header is the union of
    both files' columns, values kept as text), then delete ``source``."""
    rows: list[dict[str, str]] = []
    for path in (target, source):
        if path.is_file():
            with open(path, newline="") as handle:
                rows += list(csv.DictReader(handle))
    write_csv(target, rows)
    source.unlink()
