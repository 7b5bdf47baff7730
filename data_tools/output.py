"""Output-folder guard shared by the data tools: never overwrite an existing result unless asked."""

from __future__ import annotations

import shutil
from pathlib import Path


def prepare_output(out: Path | str, owned: tuple[str, ...], force: bool = False) -> Path:
    """Create ``out`` for a tool that writes the entries ``owned`` (names directly under ``out``).

    If any owned entry already exists, raise :class:`FileExistsError` naming it, unless ``force``,
    in which case only those entries are removed (other files in ``out`` are left alone).
    """
    out = Path(out)
    existing = [out / name for name in owned if (out / name).exists() or (out / name).is_symlink()]
    if existing and not force:
        raise FileExistsError(f"output {existing[0]} already exists (use --force to overwrite)")
    for path in existing:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
