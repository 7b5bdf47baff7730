"""What a run leaves in its directory: metrics.csv, decor_metrics.csv, summary.json and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mae_dbp.files import write_csv, write_json


def read_csv(path: Path) -> list[dict]:
    """Rows of a metrics CSV with numbers parsed (empty -> nan)."""
    def number(text: str):
        try:
            return float(text) if text != "" else math.nan
        except ValueError:
            return text

    with open(path, newline="") as handle:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


class RunRecords:
    """Writes the per-epoch files of one run (only on the main process: ``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool = True, plots: bool = True) -> None:
        self.run_dir, self.enabled, self.plots = Path(run_dir), enabled, plots
        self.site_rows: list[dict] = []
        path = self.run_dir / "decor_metrics.csv"
        if enabled and path.is_file():  # a resumed run continues its per-site curve
            self.site_rows = read_csv(path)

    def epoch(self, rows: list[dict], site_metrics: dict[str, float]) -> None:
        """After each epoch: rewrite metrics.csv with all rows so far, append the per-site metrics."""
        if not self.enabled:
            return
        row = rows[-1]
        write_csv(self.run_dir / "metrics.csv", rows)
        if site_metrics:
            self.site_rows = [r for r in self.site_rows if r["epoch"] < row["epoch"]]
            self.site_rows.append({"epoch": row["epoch"], "step": row["step"], **site_metrics})
            write_csv(self.run_dir / "decor_metrics.csv", self.site_rows)

    def finish(self, summary: dict, rows: list[dict]) -> None:
        if not self.enabled:
            return
        if rows:
            write_csv(self.run_dir / "metrics.csv", rows)
        write_json(self.run_dir / "summary.json", summary)
        if not self.plots:
            return
        from mae_dbp.train import plots

        if rows:
            plots.loss_curves({self.run_dir.name: rows}, self.run_dir / "loss_vs_time.png")
        if self.site_rows:
            plots.decorrelation(self.site_rows, self.run_dir / "decorrelation.png")
