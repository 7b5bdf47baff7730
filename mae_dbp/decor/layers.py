"""Decorrelated layers: the state and behaviour they share (:class:`DecorMixin`) and ``nn.Linear``'s
version; ``nn.Conv2d``'s is in :mod:`mae_dbp.decor.conv`. The layer computes W (R x), fused or unfused.

The wrappers subclass the torch layers, so attribute access and ``isinstance`` checks of the host
model (timm init, feature info) keep working. ``weight`` and ``bias`` are the original trainable
parameters (the same objects), R is a buffer that no optimizer sees.

Each forward takes whichever form adds less work (:func:`mae_dbp.decor.cost.fused_is_cheaper`):
fused, (W R) x with A = W R cached and rebuilt only when W or R changed (tracked by their version
counters; its backward gives W the gradient dA Rᵀ, exactly what autograd through W @ R would), or
unfused, W (R x) (small batches). ``form`` forces one of them ("fused" / "unfused"). For the
``low_rank`` variant (R = I + U Vᵀ) every product with R goes through the factors (2·d·rank per
row instead of d²), in both forms, in the subsample statistics and in the update.

In training mode with gradients on, each forward keeps a detached random subsample of its input
rows (tokens for Linear, image positions' K·K·C_in patches for Conv2d). Subsamples add up until
the next R update (micro-batches, or several optimizer steps when updating every k steps): as rows
while few, as their Gram matrix XᵀX once that is cheaper (:mod:`mae_dbp.decor.cost`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mae_dbp.decor.cost import fused_is_cheaper, gram_is_cheaper, rows_update_is_cheaper
from mae_dbp.decor.matrix import (
    DecorSettings, Factors, SampleRows, SampleStats, gram_stats, row_stats, sample_stats, times_r, times_rt, update_r,
)


class _CachedFusedWeight(torch.autograd.Function):
    """Returns the cached A = W R in forward; sends dL/dW = dL/dA · Rᵀ back to W (or, with deferred
    weight gradients, dL/dA itself: the layer applies Rᵀ once to their sum in finish_weight_grad)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, r: torch.Tensor, fused: torch.Tensor, u: torch.Tensor | None,
                v: torch.Tensor | None, layer: "DecorMixin") -> torch.Tensor:
        ctx.save_for_backward(r, u, v)
        ctx.weight_shape = weight.shape
        ctx.layer = layer if layer.defer_weight_grad else None
        return fused.view_as(fused)

    @staticmethod
    def backward(ctx, grad_fused: torch.Tensor):
        if ctx.layer is not None:
            ctx.layer._grad_is_dl_da = True
            return grad_fused, None, None, None, None, None
        r, u, v = ctx.saved_tensors
        factors = None if u is None else (u, v)
        grad_weight = times_rt(grad_fused.reshape(grad_fused.shape[0], -1), r, factors)
        return grad_weight.reshape(ctx.weight_shape), None, None, None, None, None


class DecorMixin:
    """State and behaviour shared by the decorrelated layers (R, subsample, cache, update)."""

    settings: DecorSettings
    weight: nn.Parameter

    def _init_decor(self, dim: int, settings: DecorSettings) -> None:
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.settings = settings
        self.decor_dim = dim
        self.register_buffer("R", torch.eye(dim, **factory))
        if settings.variant == "low_rank":
            generator = torch.Generator().manual_seed(settings.seed)
            self.register_buffer("R_u", torch.zeros(dim, settings.rank, **factory))
            v = torch.randn(dim, settings.rank, generator=generator) / math.sqrt(dim)
            self.register_buffer("R_v", v.to(**factory))
        self.decor_out = self.weight.shape[0]
        self._generator = torch.Generator().manual_seed(settings.seed)
        self._rows: list[torch.Tensor] = []  # subsample rows since the last update, (k_i, d) each
        self._gram: torch.Tensor | None = None  # their XᵀX once that is cheaper than keeping rows
        self._count = 0  # rows in _rows + _gram
        self._fused: torch.Tensor | None = None
        self._fused_key: tuple | None = None
        self._seen_key: tuple | None = None  # W / R version of the last forward
        self._forwards = 0  # forwards at that version
        self._forwards_before = 1  # forwards at the previous version (expected forwards per build)
        self._grad_is_dl_da = False  # W.grad holds summed dL/dA (deferred), not yet dL/dW
        self._window_fused: bool | None = None  # the form of this optimizer step's training forwards (deferred)
        self._unfused_in_window = False  # an unfused training forward since the last finish (deferred)

    def factors(self) -> Factors | None:
        """(U, V) when R = I + U Vᵀ is cheaper to apply through them (``low_rank``, 2·rank < d), else None."""
        if self.settings.variant == "low_rank" and 2 * self.settings.rank < self.decor_dim:
            return self.R_u, self.R_v
        return None

    # --- the fused weight -------------------------------------------------------------------
    def _cache_key(self) -> tuple:
        w, r = self.weight, self.R
        return (w._version, w.data_ptr(), w.dtype, r._version, r.data_ptr(), r.dtype)

    def fused_weight(self) -> torch.Tensor:
        """A = W R with the weight's shape (for Conv2d: R acts on the flattened C_in·K·K axis)."""
        key = self._cache_key()
        if self._fused is None or self._fused_key != key:
            with torch.no_grad():
                w = self.weight.detach()
                fused = times_r(w.reshape(w.shape[0], -1), self.R, self.factors()).reshape(w.shape)
            self._fused, self._fused_key = fused, key
        if self.weight.requires_grad and torch.is_grad_enabled():
            u, v = self.factors() or (None, None)
            return _CachedFusedWeight.apply(self.weight, self.R, self._fused, u, v, self)
        return self._fused

    def invalidate_cache(self) -> None:
        self._fused, self._fused_key = None, None

    # --- deferred weight gradients ------------------------------------------------------------
    defer_weight_grad: bool = False  # fused backwards leave dL/dA in W.grad (see decor.defer_weight_grads)

    def finish_weight_grad(self) -> bool:
        """W.grad <- W.grad Rᵀ when it holds summed dL/dA (deferred): dL/dW of all the micro-batches
        since the last call, with one out·d² product. Returns whether it changed W.grad."""
        changed = self._grad_is_dl_da and self.weight.grad is not None
        if changed and self._unfused_in_window:
            raise RuntimeError("a decorrelated layer took both forms between two optimizer steps while deferring "
                               "its weight gradient: W.grad mixes dL/dA and dL/dW")
        if changed:
            grad = self.weight.grad
            with torch.no_grad():
                flat = grad.reshape(grad.shape[0], -1)
                grad.copy_(times_rt(flat, self.R, self.factors()).reshape(grad.shape))
        self._grad_is_dl_da, self._window_fused, self._unfused_in_window = False, None, False
        return changed

    # --- the subsample ----------------------------------------------------------------------
    def _draw(self, n: int) -> torch.Tensor:
        """Indices of ceil(sample_frac * n) rows drawn without replacement (CPU torch Generator)."""
        k = max(1, math.ceil(self.settings.sample_frac * n))
        return torch.randperm(n, generator=self._generator)[:k]

    def _rows_for_update(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _keep_sample(self, x: torch.Tensor) -> None:
        """Add a subsample of x's rows to those kept since the last update (training with grad only)."""
        if not (self.training and torch.is_grad_enabled()):
            return
        with torch.no_grad():
            rows = self._rows_for_update(x.detach())
            rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
            self._count += rows.shape[0]
            if self._gram is None and not gram_is_cheaper(self._count, self.decor_dim):
                self._rows.append(rows)
                return
            if self._gram is None:
                rows = torch.cat([*self._rows, rows])
                self._gram, self._rows = rows.T @ rows, []
            else:
                self._gram.addmm_(rows.T, rows)

    def kept_rows(self) -> torch.Tensor | None:
        """The subsample rows kept since the last update, (n, d), or None (none, or folded into XᵀX)."""
        return torch.cat(self._rows) if self._rows else None

    def kept_gram(self) -> torch.Tensor | None:
        """XᵀX (d, d) of the subsample rows kept since the last update, or None if there are none."""
        rows = self.kept_rows()
        if rows is None:
            return self._gram
        return rows.T @ rows if self._gram is None else self._gram + rows.T @ rows

    def _clear_sample(self) -> None:
        self._rows, self._gram, self._count = [], None, 0

    # --- the update -------------------------------------------------------------------------
    def _r_work(self) -> torch.Tensor:
        """R in at least float32 for the update arithmetic (R itself when it already is: no copy)."""
        return self.R.to(torch.promote_types(self.R.dtype, torch.float32))

    def _factors_work(self) -> Factors | None:
        """:meth:`factors` in R's working dtype."""
        factors = self.factors()
        if factors is None:
            return None
        dtype = torch.promote_types(self.R.dtype, torch.float32)
        return factors[0].to(dtype), factors[1].to(dtype)

    def take_stats(self, summable: bool = True) -> SampleStats | SampleRows:
        """Statistics of the subsample kept since the last update (zeros if none), and forget it.

        summable: dense statistics that can be summed over processes; otherwise the cheaper of
        dense statistics and the rows z = R x themselves (:func:`~mae_dbp.decor.cost.rows_update_is_cheaper`).
        """
        with torch.no_grad():
            r, factors = self._r_work(), self._factors_work()
            rank = None if factors is None else self.settings.rank
            if self._gram is not None:
                stats = gram_stats(self._gram.to(r.dtype), r, self._count, factors)
            elif not summable and self._rows and rows_update_is_cheaper(self._count, self.decor_dim, rank):
                stats = row_stats(torch.cat(self._rows), r, factors)
            else:
                stats = sample_stats(self.kept_rows(), r, factors)
        self._clear_sample()
        return stats

    def apply_update(self, stats: SampleStats | SampleRows, lr: float | None = None) -> float:
        """One R step from (possibly all-reduced) statistics; returns the metric of z before it."""
        step = self.settings.lr if lr is None else lr
        with torch.no_grad():
            r = self._r_work()
            low_rank = self.settings.variant == "low_rank"
            u = self.R_u.to(r.dtype) if low_rank else None
            v = self.R_v.to(r.dtype) if low_rank else None
            metric = update_r(r, stats, self.settings, step, u, v)  # in place on r
            if r is not self.R:
                self.R.copy_(r)
            if low_rank:
                self.R_u.copy_(u)
                self.R_v.copy_(v)
        self.invalidate_cache()
        return metric

    def fused_plain_module(self) -> nn.Module:
        raise NotImplementedError

    form: str = "auto"  # "auto": the cheaper form per forward; "fused": (W R) x; "unfused": W (R x)
    last_form: str | None = None  # the form the last forward took

    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unfused form W (R x), computed step by step (also the reference for checks)."""
        raise NotImplementedError

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The host layer's own operation with ``weight`` in place of W."""
        raise NotImplementedError

    def _forward_rows(self, x: torch.Tensor) -> int:
        """Rows R acts on in this forward (tokens / output positions)."""
        raise NotImplementedError

    def _choose_fused(self, x: torch.Tensor) -> bool:
        """Whether this forward on x takes the fused form (``form``, else the cheaper one); counts
        the forwards at each W / R version to spread A's build over them."""
        key = self._cache_key()
        if key != self._seen_key:
            self._seen_key, self._forwards_before, self._forwards = key, max(self._forwards, 1), 0
        self._forwards += 1
        weight_grad = torch.is_grad_enabled() and self.weight.requires_grad
        defer = self.defer_weight_grad and weight_grad
        if self.form != "auto":
            fused = self.form == "fused"
        elif defer and self._window_fused is not None:
            fused = self._window_fused  # one form for all micro-batches of an optimizer step
        else:
            fused = fused_is_cheaper(
                self._forward_rows(x), self.decor_dim, self.decor_out, cached=self._fused_key == key,
                forwards_per_build=max(self._forwards_before, self._forwards), weight_grad=weight_grad,
                input_grad=torch.is_grad_enabled() and x.requires_grad, deferred_weight_grad=defer,
            )
        if defer:
            if self._window_fused is None:
                self._window_fused = fused
            self._unfused_in_window |= not fused
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._keep_sample(x)
        fused = self._choose_fused(x)
        self.last_form = "fused" if fused else "unfused"
        return self._apply_weight(x, self.fused_weight()) if fused else self.explicit_forward(x)

    # the subsample generator and the rows kept for the next update are part of the state, so a
    # resumed (or rolled back) run draws the same rows and makes the same next update
    def get_extra_state(self) -> dict:
        gram = None if self._gram is None else self._gram.clone()  # updated in place later
        return {"generator": self._generator.get_state(), "rows": self.kept_rows(), "gram": gram, "count": self._count}

    def set_extra_state(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        self._clear_sample()
        rows, gram = state.get("rows"), state.get("gram")
        self._rows = [rows.to(self.R.device)] if rows is not None else []
        self._gram = gram.to(self.R.device) if gram is not None else None
        self._count = int(state.get("count", 0))

    def extra_repr(self) -> str:  # type: ignore[override]
        s = self.settings
        return f"{super().extra_repr()}, decor(kappa={s.kappa}, lr={s.lr}, sample_frac={s.sample_frac}, variant={s.variant})"


class DecorLinear(DecorMixin, nn.Linear):
    """``nn.Linear`` whose input is decorrelated by R (d = in_features)."""

    @classmethod
    def wrap(cls, linear: nn.Linear, settings: DecorSettings) -> "DecorLinear":
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        module.weight, module.bias = linear.weight, linear.bias
        module.train(linear.training)
        module._init_decor(linear.in_features, settings)
        return module

    def _rows_for_update(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        return rows[self._draw(rows.shape[0]).to(rows.device)]

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)

    def _forward_rows(self, x: torch.Tensor) -> int:
        return x.numel() // max(1, x.shape[-1])

    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = R x, then W z + b (two matmuls, or three thin ones more with factors; the unfused reference)."""
        return F.linear(times_rt(x, self.R, self.factors()), self.weight, self.bias)

    def fused_plain_module(self) -> nn.Linear:
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight = nn.Parameter(self.fused_weight().detach().clone(), self.weight.requires_grad)
        plain.bias = self.bias
        plain.train(self.training)
        return plain
