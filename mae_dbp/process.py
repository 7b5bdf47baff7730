"""Which device and process a job runs on: accelerate's process state, made the one way every job
needs (``cpu=True`` on a CPU machine, so torchrun / ``accelerate launch`` ranks become gloo ranks)."""

from __future__ import annotations

import torch
from accelerate import PartialState

from mae_dbp.errors import UserInputError


def cpu_only(device: str = "auto") -> bool:
    """Whether a job on ``train.device`` runs on the CPU (accelerate's ``cpu=True``): ``cpu``, or
    ``auto`` without a GPU; ``cuda`` without a GPU is a one-line error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("train.device: cuda, but torch sees no CUDA GPU here (use auto or cpu)")
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def process_state(device: str = "auto", timeout: float | None = None) -> PartialState:
    """accelerate's process state on ``train.device`` (:func:`cpu_only`); ``timeout``
    (``train.collective_timeout``, seconds) bounds every collective of the process group it starts.

    Must be the first accelerate object a job creates: on a CPU machine started with torchrun or
    ``accelerate launch --multi_gpu``, a state made without ``cpu=True`` gives separate
    world-size-1 processes instead of gloo ranks.
    """
    from datetime import timedelta

    return PartialState(cpu=cpu_only(device), **({"timeout": timedelta(seconds=timeout)} if timeout else {}))
