"""What a run leaves in its directory (:class:`~mae_dbp.run_dir.RunDir`): metrics.csv, decor_metrics.csv,
summary.json and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mae_dbp.files import write_csv, write_json
from mae_dbp.run_dir import RunDir


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

    def __init__(self, run_dir: RunDir, enabled: bool = True, plots: bool = True) -> None:
        self.run_dir, self.enabled, self.plots = run_dir, enabled, plots
        self.site_rows: list[dict] = []
        if enabled and run_dir.decor_metrics.is_file():  # a resumed run continues its per-site curve
            self.site_rows = read_csv(run_dir.decor_metrics)

    def epoch(self, rows: list[dict], site_metrics: dict[str, float]) -> None:
        """After each epoch: rewrite metrics.csv with all rows so far, append the per-site metrics."""
        if not self.enabled:
            return
        row = rows[-1]
        write_csv(self.run_dir.metrics, rows)
        if site_metrics:
            self.site_rows = [r for r in self.site_rows if r["epoch"] < row["epoch"]]
            self.site_rows.append({"epoch": row["epoch"], "step": row["step"], **site_metrics})
            write_csv(self.run_dir.decor_metrics, self.site_rows)

    def finish(self, summary: dict, rows: list[dict]) -> None:
        if not self.enabled:
            return
        if rows:
            write_csv(self.run_dir.metrics, rows)
        write_json(self.run_dir.summary, summary)
        if not self.plots:
            return
        from mae_dbp.train import plots

        if rows:
            plots.loss_curves({self.run_dir.path.name: rows}, self.run_dir.loss_plot)
        if self.site_rows:
            plots.decorrelation(self.site_rows, self.run_dir.decorrelation_plot)
