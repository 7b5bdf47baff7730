"""What the comparison benches print: number cells and one markdown table writer.

Figures come from :func:`mae_dbp.train.plots.figure` (``Figure`` objects, no pyplot, no backend
chosen at import).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def fmt(value: float | None, spec: str, missing: str = "never") -> str:
    """``value`` formatted by ``spec``; None as ``missing`` ("never" reached; "n/a": not measured)."""
    return missing if value is None else format(value, spec)


def range_cell(entry: dict, spec: str, missing: str = "never") -> str:
    """A :func:`~mae_dbp.bench.compare.median_range` entry as "median (min - max)[, never in k]"."""
    text = " ".join((fmt(entry["median"], spec, missing), f"({fmt(entry['min'], spec, missing)} -",
                     f"{fmt(entry['max'], spec, missing)})"))
    return text + (f", {missing} in {entry['never']}" if entry.get("never") else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (no trailing newline) of ``header`` and ``rows`` of cells (str() of each)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
