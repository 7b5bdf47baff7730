"""Decorrelated layers: the state and behaviour they share (:class:`DecorMixin`) and ``nn.Linear``'s
version; ``nn.Conv2d``'s is in :mod:`mae_dbp.decor.conv`. The layer computes W (R x), fused or unfused.

The wrappers subclass the torch layers, so attribute access and ``isinstance`` checks of the host
model (timm init, feature info) keep working. ``weight`` and ``bias`` are the original trainable
parameters (the same objects), R is a buffer that no optimizer sees. A layer's state is split into
small named parts: R (and U, V for ``low_rank``) as buffers, the rows kept for the next update
(:class:`~mae_dbp.decor.subsample.Subsample`, a child module) and the eager form rule with the cached
fused weight (:class:`~mae_dbp.decor.forms.FormChooser`, plain Python state).

In training mode with gradients on, each forward keeps a detached random subsample of its input
rows (tokens for Linear, image positions' K·K·C_in patches for Conv2d) for the next R update. For
the ``low_rank`` variant (R = I + U Vᵀ) every product with R goes through the factors (2·d·rank per
row instead of d²), in both forms, in the statistics and in the update.

The forward traces under ``torch.compile`` with no graph break and no step-dependent guard: there it
builds A = W R in the graph (autograd gives W its gradient dL/dA · Rᵀ), picks its form from the
shapes alone, and adds its subsample to the Subsample buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mae_dbp.decor.cost import fused_is_cheaper, rows_update_is_cheaper
from mae_dbp.decor.forms import FormChooser
from mae_dbp.decor.matrix import Factors, SampleRows, SampleStats, times_r, times_rt, update_r
from mae_dbp.decor.settings import DecorSettings
from mae_dbp.decor.subsample import Subsample


class DecorMixin:
    """State and behaviour shared by the decorrelated layers (R, subsample, forms, update)."""

    settings: DecorSettings
    weight: nn.Parameter

    def _init_decor(self, dim: int, settings: DecorSettings) -> None:
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.settings = settings
        self.decor_dim = dim
        self.decor_out = self.weight.shape[0]
        self.register_buffer("R", torch.eye(dim, **factory))
        if settings.variant == "low_rank":
            generator = torch.Generator().manual_seed(settings.seed)
            self.register_buffer("R_u", torch.zeros(dim, settings.rank, **factory))
            v = torch.randn(dim, settings.rank, generator=generator) / math.sqrt(dim)
            self.register_buffer("R_v", v.to(**factory))
        self.subsample = Subsample(dim, settings.sample_frac, settings.seed, **factory)
        self.forms = FormChooser()
        self._low_rank_started = False  # the first low-rank step starts V at eigenvectors (see matrix.low_rank_step)
        self._had_sample = False  # whether the last take_stats found rows (known without reading a tensor)

    def factors(self) -> Factors | None:
        """(U, V) when R = I + U Vᵀ is cheaper to apply through them (``low_rank``, 2·rank < d), else None."""
        if self.settings.variant == "low_rank" and 2 * self.settings.rank < self.decor_dim:
            return self.R_u, self.R_v
        return None

    # --- the form and the fused weight --------------------------------------------------------
    @property
    def form(self) -> str:
        """"auto": the cheaper form per forward; "fused": (W R) x; "unfused": W (R x)."""
        return self.forms.form

    @form.setter
    def form(self, value: str) -> None:
        self.forms.form = value

    @property
    def last_form(self) -> str | None:
        return self.forms.last_form

    @property
    def defer_weight_grad(self) -> bool:
        """Fused backwards leave dL/dA in W.grad (see :func:`mae_dbp.decor.defer_weight_grads`)."""
        return self.forms.defer

    @defer_weight_grad.setter
    def defer_weight_grad(self, value: bool) -> None:
        self.forms.defer = value

    def _build_fused(self) -> torch.Tensor:
        """A = W R with the weight's shape (for Conv2d: R acts on the flattened C_in·K·K axis)."""
        w = self.weight
        return times_r(w.reshape(w.shape[0], -1), self.R, self.factors()).reshape(w.shape)

    def fused_weight(self) -> torch.Tensor:
        """A = W R, cached until W or R change (eager), with W's gradient when one is needed."""
        return self.forms.cached_weight(self.weight, self.R, lambda: self._build_fused().detach(), self.factors())

    def invalidate_cache(self) -> None:
        self.forms.invalidate()

    def finish_weight_grad(self) -> bool:
        """W.grad <- W.grad Rᵀ when it holds summed dL/dA (deferred); returns whether it changed W.grad."""
        return self.forms.finish_weight_grad(self.weight, lambda g: times_rt(g, self.R, self.factors()))

    # --- the subsample and the update --------------------------------------------------------
    def _rows_for_update(self, x: torch.Tensor) -> torch.Tensor:
        """A random subsample of x's rows for the update, (k, d)."""
        raise NotImplementedError

    def _r_work(self) -> torch.Tensor:
        """R in at least float32 for the update arithmetic (R itself when it already is: no copy)."""
        return self.R.to(torch.promote_types(self.R.dtype, torch.float32))

    def _factors_work(self) -> Factors | None:
        factors = self.factors()
        if factors is None:
            return None
        dtype = torch.promote_types(self.R.dtype, torch.float32)
        return factors[0].to(dtype), factors[1].to(dtype)

    def take_stats(self, summable: bool = True) -> SampleStats | SampleRows:
        """Statistics of the subsample kept since the last update (zeros if none), and forget it
        (``summable``: dense, for summing over processes; see :meth:`Subsample.take`)."""
        self._had_sample = self.subsample.folded or self.subsample.kept_rows() is not None
        with torch.no_grad():
            rank = self.settings.rank if self.factors() is not None else None
            return self.subsample.take(self._r_work(), self._factors_work(), summable, rank)

    def take_rows(self) -> torch.Tensor | None:
        """The kept rows X (n, d) when this layer's update may go through the stacked rows path
        (:func:`~mae_dbp.decor.matrix.update_r_stacked`: ``standard`` / ``triangular``, rows kept
        unfolded, the rows path the cheaper one), forgetting them; else None and nothing changes."""
        subsample = self.subsample
        if self.settings.variant not in ("standard", "triangular") or subsample.folded or not subsample._rows:
            return None
        if not rows_update_is_cheaper(subsample._row_count, self.decor_dim):
            return None
        rows = subsample.kept_rows()
        subsample.clear()
        self._had_sample = True
        return rows

    def set_r(self, r: torch.Tensor) -> None:
        """R <- ``r`` (d, d) after an update computed elsewhere (a stacked update of several layers)."""
        with torch.no_grad():
            self.R.copy_(r)
        self.invalidate_cache()

    def apply_update(self, stats: SampleStats | SampleRows, lr: float | None = None) -> torch.Tensor:
        """One R step from (possibly all-reduced) statistics, at ``lr`` (default ``settings.lr``)
        x ``settings.lr_scale``; returns the metric of z before it (0-dim tensor, nan if no sample)."""
        step = self.settings.lr if lr is None else lr
        low_rank = self.settings.variant == "low_rank"
        with torch.no_grad():
            r = self._r_work()
            u = self.R_u.to(r.dtype) if low_rank else None
            v = self.R_v.to(r.dtype) if low_rank else None
            first = low_rank and not self._low_rank_started
            metric = update_r(r, stats, self.settings, step, u, v, first=first)  # in place on r
            if r is not self.R:
                self.R.copy_(r)
            if low_rank:
                self.R_u.copy_(u)
                self.R_v.copy_(v)
        if low_rank and self._had_sample:
            self._low_rank_started = True
        self.invalidate_cache()
        return metric

    # --- computing ----------------------------------------------------------------------------
    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unfused form W (R x), computed step by step (also the reference for checks)."""
        raise NotImplementedError

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The host layer's own operation with ``weight`` in place of W."""
        raise NotImplementedError

    def _forward_rows(self, x: torch.Tensor) -> int:
        """Rows R acts on in this forward (tokens / output positions)."""
        raise NotImplementedError

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The traced forward: form by shape (A never cached), A = W R built in the graph."""
        if self.form == "auto":
            weight_grad = torch.is_grad_enabled() and self.weight.requires_grad
            fused = fused_is_cheaper(self._forward_rows(x), self.decor_dim, self.decor_out, cached=False,
                                     weight_grad=weight_grad, input_grad=torch.is_grad_enabled() and x.requires_grad)
        else:
            fused = self.form == "fused"
        return self._apply_weight(x, self._build_fused()) if fused else self.explicit_forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.subsample.add(self._rows_for_update(x.detach()))
        if torch.compiler.is_compiling():
            return self._compiled_forward(x)
        fused = self.forms.choose_fused(self.weight, self.R, self._forward_rows(x), self.decor_dim, self.decor_out,
                                        input_grad=torch.is_grad_enabled() and x.requires_grad)
        return self._apply_weight(x, self.fused_weight()) if fused else self.explicit_forward(x)

    # --- plain again ----------------------------------------------------------------------------
    def _plain_weight(self) -> nn.Parameter:
        """W's own Parameter, now holding W R: optimizer state, gradient hooks (DDP) and references
        carry over to the plain layer. The decorrelated layer is consumed (it would apply R twice)."""
        with torch.no_grad():
            self.weight.copy_(self._build_fused())
        self.invalidate_cache()
        return self.weight

    def fused_plain_module(self) -> nn.Module:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A plain layer's state (weight, bias; e.g. a run whose R was fused mid-run) loads as R = I,
        the same function; then the low-rank start flag follows the loaded U."""
        if prefix + "weight" in state_dict and prefix + "R" not in state_dict:
            state_dict[prefix + "R"] = torch.eye(self.decor_dim, dtype=self.R.dtype)
            if self.settings.variant == "low_rank":
                state_dict[prefix + "R_u"] = torch.zeros_like(self.R_u, device="cpu")
                state_dict[prefix + "R_v"] = self.R_v.detach().cpu()
            sample = prefix + "subsample."
            state_dict[sample + "gram"] = torch.zeros_like(self.subsample.gram, device="cpu")
            state_dict[sample + "count"] = torch.zeros_like(self.subsample.count, device="cpu")
            state_dict[sample + "_extra_state"] = {}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.invalidate_cache()
        if self.settings.variant == "low_rank" and prefix + "R_u" in state_dict:
            self._low_rank_started = bool(self.R_u.any())  # once, at load time

    def extra_repr(self) -> str:  # type: ignore[override]
        s = self.settings
        scale = f", lr_scale={s.lr_scale}" if s.lr_scale != 1.0 else ""
        return (f"{super().extra_repr()}, decor(kappa={s.kappa}, lr={s.lr}{scale}, sample_frac={s.sample_frac}, "
                f"variant={s.variant})")


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
        return rows[self.subsample.draw(rows.shape[0], rows.device)]

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)

    def _forward_rows(self, x: torch.Tensor) -> int:
        return x.numel() // max(1, x.shape[-1])

    def explicit_forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = R x, then W z + b (two matmuls, or three thin ones more with factors; the unfused reference)."""
        return F.linear(times_rt(x, self.R, self.factors()), self.weight, self.bias)

    def fused_plain_module(self) -> nn.Linear:
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        plain.weight, plain.bias = self._plain_weight(), self.bias
        plain.train(self.training)
        return plain
