"""The device a benchmark measures on: ``--device``, ``--dtype`` and ``--compile`` for every bench.

    device = resolve_device("auto")                  # cuda when torch sees a GPU, else cpu
    with autocast(device, "bf16"):                   # torch.autocast(device.type, torch.bfloat16)
        loss = model(images)[0]
    synchronize(device)                              # before reading a timer (CUDA runs async)
    result.update(device_record(device, "bf16", compile=True))   # what the JSON says was measured

``--dtype bf16`` is autocast (weights, optimizer state and R stay float32), as
``train.mixed_precision: bf16`` trains. Torch is imported inside the functions, so registering the
flags (``mae-dbp --help``) stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from typing import TYPE_CHECKING, ContextManager

from mae_dbp.errors import UserInputError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bf16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype`` and ``--compile`` on a bench's sub-parser."""
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="float32, or bf16 autocast (weights and R stay float32; default float32)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd contenders")


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto``: the current CUDA device when torch sees one, else the CPU; ``cpu``, ``cuda``,
    ``cuda:N`` as written (a CUDA device that is not there is a one-line error)."""
    import torch

    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserInputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {name}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserInputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def autocast(device: "torch.device", dtype: str) -> ContextManager:
    """bf16 autocast on ``device`` for ``dtype="bf16"``; nothing for float32."""
    import torch

    if dtype not in DTYPES:
        raise UserInputError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's CPU threads set to ``threads`` inside the block (None or 0: left as they are) and
    restored after it, also on an error. Yields the number in effect (for the JSON's device entry)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield threads or previous
    finally:
        torch.set_num_threads(previous)


def synchronize(device: "torch.device") -> None:
    """Wait for the work queued on ``device`` (CUDA kernels run asynchronously); a no-op on CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: "torch.device") -> str:
    """The GPU's name (``torch.cuda.get_device_name``), or the CPU's as the platform reports it."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def reset_peak_memory(device: "torch.device") -> None:
    """Start a new peak for :func:`peak_memory_gib` (CUDA only; a no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: "torch.device") -> float | None:
    """GiB of tensor memory at its peak since :func:`reset_peak_memory` (None on CPU: not tracked)."""
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def device_record(device: "torch.device", dtype: str, compile: bool) -> dict:
    """What a bench's JSON says about where it measured: device, its name, dtype, compile, versions."""
    import torch

    return {
        "device": str(device), "device_name": device_name(device), "dtype": dtype, "compile": bool(compile),
        "torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }
