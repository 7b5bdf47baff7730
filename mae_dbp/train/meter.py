"""The training loop's numbers, kept on the device and read to the host once per check interval.

Reading a CUDA tensor (``float(loss)``, ``.item()``, ``.tolist()``) makes the host wait for the GPU
to finish everything queued, so the loop reads nothing per micro-batch: :meth:`StepMeter.add`
adds the loss (finite ones, and a count of the non-finite) and the number of input rows holding a
NaN/Inf to device tensors; :meth:`StepMeter.read` all-reduces them over the ranks together with
the main process's "out of time" flag and reads the five numbers in one ``.tolist()``. The loop
calls it every ``train.check_every`` optimizer steps and at the end of the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator


@dataclass
class Reading:
    """One check interval's numbers, summed over the ranks."""

    loss_sum: float  # sum of the finite micro-batch losses
    finite: int  # micro-batches with a finite loss
    non_finite: int  # micro-batches with a nan / inf loss
    bad_rows: int  # input rows holding a nan / inf
    out_of_time: bool  # the main process's clock passed train.max_train_seconds
    stop_requested: bool = False  # a rank got SIGTERM / SIGINT / SIGUSR1 (mae_dbp.train.stop)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.finite if self.finite else math.nan


class StepMeter:
    """Device-side sums of the micro-batches since the last :meth:`read` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sums = torch.zeros(4, device=device)
        self._bad_index: list[torch.Tensor] = []  # per micro-batch: dataset index of a bad row, else -1

    def add(self, loss: torch.Tensor, inputs: torch.Tensor, index: torch.Tensor) -> None:
        """Count one micro-batch: its (scalar) loss, and which of its input rows (B, ...) hold a nan / inf."""
        loss = loss.detach().float().reshape(())
        finite = torch.isfinite(loss)
        bad = ~torch.isfinite(inputs.detach()).flatten(1).all(1)
        self._sums += torch.stack([torch.where(finite, loss, 0.0), finite.float(), (~finite).float(), bad.sum().float()])
        self._bad_index.append(torch.where(bad, index.to(bad.device), -1))

    def read(self, accelerator: Accelerator, out_of_time: bool = False, stop_requested: bool = False) -> Reading:
        """The interval's numbers over all ranks (one all-reduce, one host read); starts a new interval.
        ``stop_requested``: this rank got a stop signal (any rank's makes every rank stop)."""
        flags = torch.tensor([float(out_of_time and accelerator.is_main_process), float(stop_requested)], device=self.device)
        values = torch.cat([self._sums, flags])
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, "sum")
        loss_sum, finite, non_finite, bad_rows, stop, signalled = values.tolist()
        self._sums.zero_()
        return Reading(loss_sum, int(finite), int(non_finite), int(bad_rows), stop > 0, signalled > 0)

    def bad_indices(self) -> list[int]:
        """Dataset indices of this rank's input rows with a nan / inf since the last :meth:`clear` (a host read)."""
        if not self._bad_index:
            return []
        found = torch.cat(self._bad_index)
        return [int(i) for i in found[found >= 0].tolist()]

    def clear(self) -> None:
        """Forget the bad-row indices kept since the last check (after a check found none)."""
        self._bad_index.clear()
