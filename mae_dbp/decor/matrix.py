"""The decorrelation matrix R: statistics, the update rule, its variants and the metric (settings: settings.py).

For an input x (d features), the decorrelated input is z = R x. One update, from a subsample of n
input rows X (n, d) with Z = X Rᵀ:

    S   = Zᵀ Z / n                         second moment of z, (d, d)
    C   = S with its diagonal set to 0     off-diagonal covariance
    V   = diag(diag(S) - 1)                variance error (scales the *rows* of R: V R = diag(v) R)
    G   = (1 - kappa) C + kappa V
    R  <- R - lr * G R

Two ways to get G R, chosen by cost (:mod:`mae_dbp.decor.cost`): from the dense S (n·d²
for S, d³ for S R) or, for few rows, from the rows themselves as S R = Zᵀ (Z R) / n (2·n·d², no
d³ term). Statistics of several forwards (micro-batches, or k optimizer steps between updates) are
summed, so one update on them equals one update on the concatenated rows.

Variants: ``gain`` rescales the new R so the mean squared norm of z equals that of x;
``triangular`` masks the step to the lower triangle (R stays lower-triangular); ``low_rank`` keeps
R = I + U Vᵀ (U, V: (d, rank)) and moves the factors along the projected step
U <- U - lr (G R) V, V <- V - lr (G R)ᵀ U. With factors, every product with R costs 2·d·rank per
row instead of d² (:func:`times_r`, :func:`times_rt`), and the factor step is computed from thin
products G (R V), Rᵀ (G U) with no d x d x d term (:func:`low_rank_step`).

Everything here works on plain tensors; :mod:`mae_dbp.decor.layers` holds the module state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mae_dbp.decor.cost import gram_is_cheaper
from mae_dbp.decor.settings import DecorSettings

@dataclass
class SampleStats:
    """Dense statistics of a subsample, summable across processes.

    zz: Zᵀ Z summed over rows, (d, d); xx: sum of squared input entries, scalar tensor;
    count: number of rows, scalar tensor. All in R's working dtype (at least float32).
    """

    zz: torch.Tensor
    xx: torch.Tensor
    count: torch.Tensor

    def flat(self) -> torch.Tensor:
        return torch.cat([self.zz.reshape(-1), self.xx.reshape(1), self.count.reshape(1)])

    @classmethod
    def from_flat(cls, flat: torch.Tensor, d: int) -> "SampleStats":
        return cls(flat[: d * d].view(d, d), flat[d * d], flat[d * d + 1])


@dataclass
class SampleRows:
    """A subsample kept as its decorrelated rows z = R x, (n, d), for the update path from rows.

    xx: sum of squared input entries (scalar tensor), for the ``gain`` variant.
    """

    z: torch.Tensor
    xx: torch.Tensor

    @property
    def count(self) -> torch.Tensor:
        return self.xx.new_tensor(float(self.z.shape[0]))


Factors = tuple[torch.Tensor, torch.Tensor]  # (U, V), each (d, rank): R = I + U Vᵀ


def times_rt(x: torch.Tensor, r: torch.Tensor, factors: Factors | None = None) -> torch.Tensor:
    """x Rᵀ for rows x (..., d), i.e. z = R x row by row: d² per row, or 2·d·rank with factors."""
    if factors is None:
        return F.linear(x, r.to(x.dtype))
    u, v = factors
    return x + (x @ v.to(x.dtype)) @ u.T.to(x.dtype)  # x (I + V Uᵀ)


def times_r(m: torch.Tensor, r: torch.Tensor, factors: Factors | None = None) -> torch.Tensor:
    """m R for rows m (..., d) (e.g. the fused weight W R): d² per row, or 2·d·rank with factors."""
    if factors is None:
        return m @ r.to(m.dtype)
    u, v = factors
    return m + (m @ u.to(m.dtype)) @ v.T.to(m.dtype)  # m (I + U Vᵀ)


def sample_stats(x: torch.Tensor | None, r: torch.Tensor, factors: Factors | None = None) -> SampleStats:
    """Dense statistics of z = R x for input rows x (n, d); zeros when there is no sample."""
    d = r.shape[0]
    if x is None:
        zero = r.new_zeros(())
        return SampleStats(r.new_zeros(d, d), zero, zero.clone())
    x = x.to(r.dtype)
    n = x.shape[0]
    if gram_is_cheaper(n, d):
        return gram_stats(x.T @ x, r, n, factors)
    z = times_rt(x, r, factors)
    return SampleStats(z.T @ z, (x * x).sum(), r.new_tensor(float(n)))


def gram_stats(xx: torch.Tensor, r: torch.Tensor, count: int | torch.Tensor,
               factors: Factors | None = None) -> SampleStats:
    """Dense statistics of z = R x from the input Gram matrix XᵀX (d, d) of ``count`` rows."""
    xx_rt = times_rt(xx, r, factors)  # XᵀX Rᵀ; R (XᵀX Rᵀ) = (XᵀX Rᵀ)ᵀ Rᵀ as XᵀX is symmetric
    count = count.to(r.dtype) if isinstance(count, torch.Tensor) else r.new_tensor(float(count))
    return SampleStats(times_rt(xx_rt.T, r, factors), torch.diagonal(xx).sum(), count)


def row_stats(x: torch.Tensor, r: torch.Tensor, factors: Factors | None = None) -> SampleRows:
    """The rows z = R x of input rows x (n, d), for the update path from rows."""
    x = x.to(r.dtype)
    return SampleRows(times_rt(x, r, factors), (x * x).sum())


def decor_gradient(second_moment: torch.Tensor, kappa: float) -> torch.Tensor:
    """G = (1 - kappa) C + kappa V for the second moment S = mean(z zᵀ), (d, d)."""
    diag = torch.diagonal(second_moment)
    g = second_moment * (1.0 - kappa)
    g.diagonal().copy_(kappa * (diag - 1.0))
    return g


def _row_scale(variances: torch.Tensor, kappa: float) -> torch.Tensor:
    """c with G = (1 - kappa) S + diag(c): c = (2 kappa - 1) s - kappa for s = diag(S)."""
    return (2.0 * kappa - 1.0) * variances - kappa


def correlation_metric(second_moment: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal entry of the correlation of z, from S = mean(z zᵀ) (unitless).

    A 0-dim tensor on S's device (reading it is the caller's choice: it waits for the device)."""
    d = second_moment.shape[0]
    if d < 2:
        return second_moment.new_zeros(())
    scale = torch.diagonal(second_moment).clamp_min(1e-12).rsqrt()
    corr = second_moment * scale[:, None] * scale[None, :]
    off = corr.square().sum() - torch.diagonal(corr).square().sum()
    return off / (d * (d - 1))


def _rows_metric(z: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """:func:`correlation_metric` of S = Zᵀ Z / n from the rows z (n, d) without a d x d matrix:
    with Y = Z diag(s)^-1/2, sum_ij corr_ij² = |Yᵀ Y|²_F / n² = |Y Yᵀ|²_F / n² (n x n)."""
    n, d = z.shape
    if d < 2:
        return z.new_zeros(())
    scale = variances.clamp_min(1e-12).rsqrt()
    zs = z * scale[None, :]
    total = (zs @ zs.T).square().sum() / (n * n)
    diag = (variances * scale * scale).square().sum()
    return (total - diag) / (d * (d - 1))


def _step_and_metric(r: torch.Tensor, stats: SampleStats | SampleRows, kappa: float, count: torch.Tensor):
    """(G R, the metric of z, a function lr -> mean |z_new|² for ``gain``) from either form of statistics;
    ``count`` >= 1 (the caller masks empty samples)."""
    if isinstance(stats, SampleRows):
        z = stats.z
        variances = z.square().sum(0) / count
        step = (z.T @ (z @ r)).mul_((1.0 - kappa) / count)  # (1 - kappa) S R with S = Zᵀ Z / n
        step.addcmul_(_row_scale(variances, kappa)[:, None], r)
        metric = _rows_metric(z, variances)

        def z_sq(lr: torch.Tensor) -> torch.Tensor:  # Z_new = Z (I - lr G), Z G = (1 - kappa) Z Zᵀ Z / n + Z diag(c)
            zg = (z @ z.T @ z).mul_((1.0 - kappa) / count).addcmul_(z, _row_scale(variances, kappa)[None, :])
            return (z - lr * zg).square().sum() / count

        return step, metric, z_sq
    s = stats.zz / count
    g = decor_gradient(s, kappa)

    def z_sq(lr: torch.Tensor) -> torch.Tensor:  # new R = M R_old with M = I - lr G, so mean |z_new|² = tr(M S Mᵀ)
        m = torch.eye(r.shape[0], dtype=r.dtype, device=r.device) - lr * g
        return ((m @ s) * m).sum()

    return g @ r, correlation_metric(s), z_sq


def low_rank_step(stats: SampleStats | SampleRows, u: torch.Tensor, v: torch.Tensor, kappa: float,
                  lr: torch.Tensor, first: bool = False) -> torch.Tensor:
    """The ``low_rank`` step in place on the factors, from thin products only; returns the metric.

    U <- U - lr G (R V), V <- V - lr Rᵀ (G U) with R V = V + U (Vᵀ V), Rᵀ M = M + V (Uᵀ M) and
    G M = (1 - kappa) S M + diag(c) M (:func:`_row_scale`); S M costs 2·n·d·rank from the rows
    (S = Zᵀ Z / n) or d²·rank from dense statistics. Equals the dense step (G R) V, (G R)ᵀ U.

    ``first`` (U = 0, so R = I): first set V to the ``rank`` leading eigenvectors of S (a d³
    eigendecomposition, once): the projected step can only move R within span(V), and the
    strongest correlations (e.g. the common direction of non-centred ReLU activations) lie there,
    which a random V of rank << d misses. ``lr`` is a 0-dim tensor, 0 for an empty sample.
    """
    count = stats.count.clamp_min(1)
    if isinstance(stats, SampleRows):
        z = stats.z
        variances = z.square().sum(0) / count
        metric = _rows_metric(z, variances)

        def s_times(m: torch.Tensor) -> torch.Tensor:
            return z.T @ (z @ m) / count

        def dense() -> torch.Tensor:
            return z.T @ z / count
    else:
        s = stats.zz / count
        variances = torch.diagonal(s)
        metric = correlation_metric(s)

        def s_times(m: torch.Tensor) -> torch.Tensor:
            return s @ m

        def dense() -> torch.Tensor:
            return s
    if first:  # eigh sorts ascending; an empty sample (lr 0) keeps V
        leading = torch.linalg.eigh(dense())[1][:, -v.shape[1]:].flip(1)
        v.copy_(torch.where(lr > 0, leading, v))
    c = _row_scale(variances, kappa)[:, None]

    def g_times(m: torch.Tensor) -> torch.Tensor:
        return s_times(m).mul_(1.0 - kappa).addcmul_(c, m)

    g_rv = g_times(v + u @ (v.T @ v))
    g_u = g_times(u)
    rt_g_u = g_u + v @ (u.T @ g_u)
    u.sub_(g_rv * lr)
    v.sub_(rt_g_u * lr)
    return metric


def update_r(
    r: torch.Tensor,
    stats: SampleStats | SampleRows,
    settings: DecorSettings,
    lr: float,
    u: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    first: bool = False,
) -> torch.Tensor:
    """Apply one update in place to R (and U, V for ``low_rank``); returns the metric of z before it.

    r: (d, d); stats: summed dense statistics or the rows of the subsample; lr: this step's size
    (``settings.lr_scale`` is applied here); first: the low-rank layer's first step. Nothing is read
    back to the host: an empty sample (count 0) makes a zero step and a nan metric by masking.
    """
    active = stats.count > 0
    count = stats.count.clamp_min(1)
    step_lr = active.to(r.dtype) * (lr * settings.lr_scale)
    nan = torch.full((), float("nan"), dtype=r.dtype, device=r.device)
    if settings.variant == "low_rank":
        assert u is not None and v is not None
        metric = low_rank_step(stats, u, v, settings.kappa, step_lr, first)
        torch.mm(u, v.T, out=r)
        r.diagonal().add_(1.0)  # R = I + U Vᵀ
        return torch.where(active, metric, nan)
    step, metric, z_sq = _step_and_metric(r, stats, settings.kappa, count)
    if settings.variant == "triangular":
        step = torch.tril(step)
    r.sub_(step.mul_(step_lr))
    if settings.variant == "gain":
        new_sq = z_sq(step_lr)
        keep = active & (new_sq > 0)
        r.mul_(torch.where(keep, torch.sqrt(stats.xx / count / new_sq.clamp_min(1e-30)), torch.ones_like(new_sq)))
    return torch.where(active, metric, nan)


def update_r_stacked(r: torch.Tensor, x: torch.Tensor, kappa: torch.Tensor, lr: torch.Tensor,
                     triangular: bool = False) -> torch.Tensor:
    """One update of L layers of the same width at once, from their subsample rows: in place on ``r``.

    r: (L, d, d) the layers' R (working dtype); x: (L, n, d) each layer's n input rows; kappa, lr:
    (L,) each layer's kappa and step (lr x lr_scale; 0 for a layer without a sample). The rows path
    of :func:`update_r` (``standard`` / ``triangular``) with batched products: Z = X Rᵀ,
    G R = (1 - kappa) Zᵀ (Z R) / n + diag(c) R, the metric from Z Zᵀ. Returns the L metrics (L,).
    """
    n, d = x.shape[1], x.shape[2]
    z = x.to(r.dtype) @ r.mT
    variances = z.square().sum(1) / n  # (L, d)
    step = (z.mT @ (z @ r)).mul_(((1.0 - kappa) / n)[:, None, None])
    step.addcmul_(_row_scale(variances, kappa[:, None])[..., None], r)
    if triangular:
        step = torch.tril(step)
    r.sub_(step.mul_(lr[:, None, None]))
    if d < 2:
        return r.new_zeros(r.shape[0])
    scale = variances.clamp_min(1e-12).rsqrt()
    zs = z * scale[:, None, :]
    total = (zs @ zs.mT).square().sum((1, 2)) / (n * n)
    diag = (variances * scale * scale).square().sum(1)
    return (total - diag) / (d * (d - 1))
