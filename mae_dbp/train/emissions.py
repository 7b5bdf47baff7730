"""CO2 and energy of the training phases only, with codecarbon's offline tracker.

Each epoch's training part is one codecarbon task, so validation is left out. codecarbon's
constructor swallows its own errors; when it cannot measure, the totals stay 0 and ``available``
is False (reported in summary.json rather than failing a run).

Files in the run directory: codecarbon's ``emissions.csv`` (one row per process run) and
``emissions_tasks.csv`` (one row per epoch's training phase, appended across resumes). codecarbon
3.3 writes the task rows to ``emissions_base_<run uuid>.csv``, a new file per start; ``close()``
moves its rows into ``emissions_tasks.csv`` and removes it.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from mae_dbp.files import move_csv_rows

TASKS_FILE = "emissions_tasks.csv"


class TrainingEmissions:
    """Sum of kg CO2-eq and kWh over the ``train()`` phases of a run (main process only)."""

    def __init__(self, out_dir: Path, country: str, enabled: bool = True, kg_co2: float = 0.0, kwh: float = 0.0):
        self.kg_co2, self.kwh = kg_co2, kwh
        self.out_dir = Path(out_dir)
        self.tracker = None
        if not enabled:
            return
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self.tracker = OfflineEmissionsTracker(
                country_iso_code=country, output_dir=str(out_dir), log_level="error",
                measure_power_secs=15, project_name="mae-dbp",  # CSV output is the default
            )
            self.tracker.start()
        except Exception as error:  # codecarbon is best effort: never stop training for it
            print(f"mae-dbp: codecarbon unavailable ({error}); emissions not measured")
            self.tracker = None

    @property
    def available(self) -> bool:
        return self.tracker is not None

    def start(self, name: str) -> None:
        if self.tracker is not None:
            self.tracker.start_task(name)

    def stop(self) -> None:
        if self.tracker is None:
            return
        data = self.tracker.stop_task()
        if data is not None:
            self.kg_co2 += float(data.emissions or 0.0)
            self.kwh += float(data.energy_consumed or 0.0)

    def close(self) -> None:
        """Stop the tracker and fold its per-run task file into :data:`TASKS_FILE`."""
        if self.tracker is None:
            return
        try:
            self.tracker.stop()
        except Exception:
            pass
        run_id = getattr(self.tracker, "run_id", None)
        self.tracker = None
        if run_id is None:
            return
        for source in self.out_dir.glob(f"emissions_*_{run_id}.csv"):
            try:
                move_csv_rows(source, self.out_dir / TASKS_FILE)
            except (OSError, csv.Error) as error:  # best effort, like the measurement itself
                print(f"mae-dbp: could not merge {source} into {TASKS_FILE} ({error})")
