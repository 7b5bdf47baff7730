"""Count the reads of tensor values to the host: where a CUDA step would wait for the GPU.

    with HostReads() as reads:
        train_one_epoch(run, task, 1)
    reads.count                    # every read
    reads.from_modules("mae_dbp.train")   # the reads made by code in those modules

Inside the block, the tensor methods that hand a value to Python (``item``, ``tolist``, ``cpu``,
``numpy``, and ``float()`` / ``int()`` / ``bool()`` / ``format()`` of a tensor) are wrapped to count each call
by the module that made it (a read inside another counted read, e.g. ``float`` calling ``item``,
counts once). On a CPU machine nothing waits, but the same calls on CUDA tensors synchronise:
this is how the host syncs of a step are counted without a GPU. Reads that torch makes without
these methods (boolean-mask indexing, ``nonzero``, a ``randperm`` copied to the device) are not
seen: ``torch.cuda.set_sync_debug_mode("warn")`` on a GPU reports those too.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Callable

import torch

METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__")


class HostReads:
    """A context manager counting host reads by the calling module (see the module docstring)."""

    def __init__(self) -> None:
        self.by_module: Counter[str] = Counter()
        self._saved: dict[str, Callable] = {}
        self._depth = 0

    @property
    def count(self) -> int:
        return sum(self.by_module.values())

    def from_modules(self, *prefixes: str) -> int:
        """Reads made by code in modules whose names start with one of ``prefixes``."""
        return sum(n for module, n in self.by_module.items() if module.startswith(prefixes))

    def _wrap(self, original: Callable) -> Callable:
        def counted(tensor, *args, **kwargs):
            if self._depth == 0:
                self.by_module[sys._getframe(1).f_globals.get("__name__", "?")] += 1
            self._depth += 1
            try:
                return original(tensor, *args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def __enter__(self) -> "HostReads":
        for name in METHODS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(self._saved[name]))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
