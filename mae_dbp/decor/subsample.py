"""The subsample a decorrelated layer keeps for R's next update.

Each training forward draws ``ceil(frac · n)`` of its n input rows without replacement and adds
them here; :meth:`Subsample.take` turns everything added since the last update into statistics
and forgets it. Rows of several forwards (micro-batches, or the k optimizer steps of
``update_every``) add up, so one update on them equals one update on the concatenated rows.

Two ways in, one way out:

- eager: the rows are drawn by this layer's own ``torch.Generator`` on the input's device (the
  same rows for the same seed, whatever else draws random numbers; no host round trip) and kept as
  rows while few, folded into their Gram matrix XᵀX once that is cheaper (:mod:`~mae_dbp.decor.cost`);
- under ``torch.compile`` (a Generator cannot be traced): drawn from the global RNG, and added to
  the ``gram`` / ``count`` buffers by tensor operations only, so the compiled forward has no graph
  break and nothing Python-side that changes from step to step.

The buffers, the kept rows and the generator state are part of the module's state_dict, so a
resumed (or rolled back) run draws the same rows and makes the same next update.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mae_dbp.decor.cost import gram_is_cheaper, rows_update_is_cheaper
from mae_dbp.decor.matrix import Factors, SampleRows, SampleStats, gram_stats, row_stats, sample_stats


class Subsample(nn.Module):
    """Rows kept for the next R update of a layer with ``dim`` input features.

    gram: XᵀX (dim, dim) of the rows folded in so far; count: their number (0-dim); both in the
    working dtype (at least float32) on the layer's device.
    """

    def __init__(self, dim: int, frac: float, seed: int, device=None, dtype=None) -> None:
        super().__init__()
        work = torch.promote_types(dtype or torch.get_default_dtype(), torch.float32)
        self.dim, self.frac, self.seed = dim, frac, seed
        self.register_buffer("gram", torch.zeros(dim, dim, device=device, dtype=work))
        self.register_buffer("count", torch.zeros((), device=device, dtype=work))
        self._rows: list[torch.Tensor] = []  # rows not folded into gram yet, (k_i, dim) each
        self._row_count = 0  # rows in _rows
        self.folded = False  # gram / count hold rows (folded in eager, or added by a compiled forward)
        self._generator: torch.Generator | None = None  # created on the first input's device

    def rows_per_forward(self, n: int) -> int:
        """How many of a forward's n rows are kept: ceil(frac · n), at least 1."""
        return max(1, math.ceil(self.frac * n))

    def draw(self, n: int, device: torch.device) -> torch.Tensor:
        """Indices (on ``device``) of :meth:`rows_per_forward` of n rows, without replacement."""
        k = self.rows_per_forward(n)
        if torch.compiler.is_compiling():
            return torch.randperm(n, device=device)[:k]
        if self._generator is None or self._generator.device != torch.device(device):
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return torch.randperm(n, generator=self._generator, device=device)[:k]

    def add(self, rows: torch.Tensor) -> None:
        """Keep detached input rows (k, dim)."""
        rows = rows.to(self.gram.dtype)
        if torch.compiler.is_compiling():
            self.gram.addmm_(rows.T, rows)
            self.count.add_(rows.shape[0])
            self.folded = True
            return
        if self.folded:
            self.gram.addmm_(rows.T, rows)
            self.count.add_(rows.shape[0])
            return
        self._rows.append(rows)
        self._row_count += rows.shape[0]
        if gram_is_cheaper(self._row_count, self.dim):
            every = torch.cat(self._rows)
            self.gram.addmm_(every.T, every)
            self.count.add_(every.shape[0])
            self._rows, self._row_count, self.folded = [], 0, True

    def kept_count(self) -> int:
        """How many rows are kept (reads the count of folded rows from the device: for inspection)."""
        return self._row_count + (int(self.count.item()) if self.folded else 0)

    def kept_rows(self) -> torch.Tensor | None:
        """The rows kept since the last update and not folded into XᵀX, (n, dim), or None."""
        return torch.cat(self._rows) if self._rows else None

    def kept_gram(self) -> torch.Tensor | None:
        """XᵀX (dim, dim) of every row kept since the last update, or None if there are none."""
        rows = self.kept_rows()
        if not self.folded:
            return None if rows is None else rows.T @ rows
        return self.gram.clone() if rows is None else self.gram + rows.T @ rows

    def take(self, r: torch.Tensor, factors: Factors | None = None, summable: bool = True,
             rank: int | None = None) -> SampleStats | SampleRows:
        """Statistics of z = R x for everything kept since the last update (zeros if none), and forget it.

        r: R in its working dtype (d, d); summable: dense statistics that can be summed over
        processes; otherwise the cheaper of dense statistics and the rows z themselves
        (:func:`~mae_dbp.decor.cost.rows_update_is_cheaper`; ``rank`` of the low-rank factors).
        """
        rows = self.kept_rows()
        if self.folded:
            gram = self.gram.to(r.dtype) if rows is None else self.gram.to(r.dtype) + (rows.T @ rows).to(r.dtype)
            stats = gram_stats(gram, r, self.count + self._row_count, factors)
        elif rows is not None and not summable and rows_update_is_cheaper(self._row_count, self.dim, rank):
            stats = row_stats(rows, r, factors)
        else:
            stats = sample_stats(rows, r, factors)
        self.clear()
        return stats

    def clear(self) -> None:
        if self.folded:
            self.gram.zero_()
            self.count.zero_()
        self._rows, self._row_count, self.folded = [], 0, False

    # the python-side part of the state: rows not folded yet, the generator
    def get_extra_state(self) -> dict:
        generator = None if self._generator is None else self._generator.get_state()
        device = None if self._generator is None else str(self._generator.device)
        return {"rows": self.kept_rows(), "folded": self.folded, "generator": generator, "generator_device": device}

    def set_extra_state(self, state: dict) -> None:
        self._rows, self._row_count = [], 0
        rows = state.get("rows")
        if rows is not None:
            self._rows, self._row_count = [rows.to(self.gram.device)], rows.shape[0]
        self.folded = bool(state.get("folded", False))
        self._generator = None
        device = state.get("generator_device")
        if state.get("generator") is not None and device == str(self.gram.device):  # else: a fresh draw on this device
            self._generator = torch.Generator(device=device)
            self._generator.set_state(state["generator"])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, frac={self.frac}"
