"""Which form a decorrelated layer computes, and the cached fused weight A = W R.

Two equivalent forms (:mod:`mae_dbp.decor.cost` says which adds less work):

- fused, y = (W R) x: A = W R is built at most once per change of W or R (their version counters
  say when) and shared by every forward until then (micro-batches, validation batches); its
  backward gives W the gradient dL/dA · Rᵀ — or, with deferred weight gradients, leaves dL/dA in
  W.grad for one Rᵀ per optimizer step (:func:`mae_dbp.decor.defer_weight_grads`);
- unfused, y = W (R x) (small batches).

Under ``torch.compile`` nothing here is used: a compiled forward computes A = W R in the graph
(autograd gives W its gradient) and picks its form from the shapes alone, so no Python-side
counter enters the graph (no guard that changes from step to step, no recompiles).
"""

from __future__ import annotations

from typing import Callable

import torch

from mae_dbp.decor.cost import fused_is_cheaper
from mae_dbp.decor.matrix import times_rt


class _CachedFusedWeight(torch.autograd.Function):
    """Returns the cached A = W R; sends dL/dW = dL/dA · Rᵀ back to W, or dL/dA itself when
    ``deferred`` (Rᵀ is then applied once to the sum, by :meth:`FormChooser.finish_weight_grad`)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, r: torch.Tensor, fused: torch.Tensor, u: torch.Tensor | None,
                v: torch.Tensor | None, deferred: bool) -> torch.Tensor:
        ctx.save_for_backward(r, u, v)
        ctx.weight_shape, ctx.deferred = weight.shape, deferred
        return fused.view_as(fused)

    @staticmethod
    def backward(ctx, grad_fused: torch.Tensor):
        if ctx.deferred:
            return grad_fused, None, None, None, None, None
        r, u, v = ctx.saved_tensors
        factors = None if u is None else (u, v)
        grad_weight = times_rt(grad_fused.reshape(grad_fused.shape[0], -1), r, factors)
        return grad_weight.reshape(ctx.weight_shape), None, None, None, None, None


class FormChooser:
    """The eager form rule and fused-weight cache of one layer (plain Python state, no tensors saved).

    ``form``: "auto" (the cheaper per forward), "fused" or "unfused"; ``defer``: deferred W gradients.
    """

    def __init__(self) -> None:
        self.form = "auto"
        self.defer = False
        self.last_form: str | None = None  # the form the last forward took
        self.fused: torch.Tensor | None = None  # A = W R, at version ``fused_key``
        self.fused_key: tuple | None = None
        self._seen_key: tuple | None = None  # W / R version of the last forward
        self._forwards = 0  # forwards at that version
        self._forwards_before = 1  # forwards at the previous version (expected forwards per build)
        self.deferred_pending = False  # a deferred fused backward may have left dL/dA in W.grad
        self._window_fused: bool | None = None  # the form of this optimizer step's training forwards (deferred)
        self._unfused_in_window = False

    @staticmethod
    def key(weight: torch.Tensor, r: torch.Tensor) -> tuple:
        return (weight._version, weight.data_ptr(), weight.dtype, r._version, r.data_ptr(), r.dtype)

    def invalidate(self) -> None:
        self.fused, self.fused_key = None, None

    def cached_weight(self, weight: torch.Tensor, r: torch.Tensor, build: Callable[[], torch.Tensor],
                      factors) -> torch.Tensor:
        """A = W R from the cache (``build()`` when W or R changed), carrying W's gradient when needed."""
        key = self.key(weight, r)
        if self.fused is None or self.fused_key != key:
            with torch.no_grad():
                self.fused, self.fused_key = build(), key
        if weight.requires_grad and torch.is_grad_enabled():
            u, v = factors or (None, None)
            deferred = self.defer
            self.deferred_pending |= deferred
            return _CachedFusedWeight.apply(weight, r, self.fused, u, v, deferred)
        return self.fused

    def choose_fused(self, weight: torch.Tensor, r: torch.Tensor, rows: int, dim: int, out: int,
                     input_grad: bool) -> bool:
        """Whether this forward takes the fused form (``form``, else the cheaper one); counts the
        forwards at each W / R version to spread A's build over them."""
        key = self.key(weight, r)
        if key != self._seen_key:
            self._seen_key, self._forwards_before, self._forwards = key, max(self._forwards, 1), 0
        self._forwards += 1
        weight_grad = torch.is_grad_enabled() and weight.requires_grad
        defer = self.defer and weight_grad
        if self.form != "auto":
            fused = self.form == "fused"
        elif defer and self._window_fused is not None:
            fused = self._window_fused  # one form for all micro-batches of an optimizer step
        else:
            fused = fused_is_cheaper(
                rows, dim, out, cached=self.fused_key == key, forwards_per_build=max(self._forwards_before, self._forwards),
                weight_grad=weight_grad, input_grad=input_grad, deferred_weight_grad=defer,
            )
        if defer:
            if self._window_fused is None:
                self._window_fused = fused
            self._unfused_in_window |= not fused
        self.last_form = "fused" if fused else "unfused"
        return fused

    def finish_weight_grad(self, weight: torch.Tensor, apply_rt: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """W.grad <- W.grad Rᵀ (``apply_rt``) when deferred fused backwards left summed dL/dA in it:
        dL/dW of all the micro-batches since the last call, with one out·d² product."""
        changed = self.deferred_pending and weight.grad is not None
        if changed and self._unfused_in_window:
            raise RuntimeError("a decorrelated layer took both forms between two optimizer steps while deferring "
                               "its weight gradient: W.grad mixes dL/dA and dL/dW")
        if changed:
            grad = weight.grad
            with torch.no_grad():
                grad.copy_(apply_rt(grad.reshape(grad.shape[0], -1)).reshape(grad.shape))
        self.deferred_pending, self._window_fused, self._unfused_in_window = False, None, False
        return changed
