"""CO2 and energy of the training phases only, with codecarbon's offline tracker.

Each epoch's training part is one codecarbon task, so validation is left out. codecarbon's
constructor swallows its own errors; when it cannot measure, the totals stay 0 and ``available``
is False (reported in summary.json rather than failing a run).
"""

from __future__ import annotations

import logging
from pathlib import Path


class TrainingEmissions:
    """Sum of kg CO2-eq and kWh over the ``train()`` phases of a run (main process only)."""

    def __init__(self, out_dir: Path, country: str, enabled: bool = True, kg_co2: float = 0.0, kwh: float = 0.0):
        self.kg_co2, self.kwh = kg_co2, kwh
        self.tracker = None
        if not enabled:
            return
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self.tracker = OfflineEmissionsTracker(
                country_iso_code=country, output_dir=str(out_dir), log_level="error",
                save_to_file=True, measure_power_secs=15, project_name="mae-dbp",
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
        if self.tracker is not None:
            try:
                self.tracker.stop()
            except Exception:
                pass
            self.tracker = None
