"""The decorrelation matrix R: settings, statistics, the update rule, its variants and the metric.

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

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from mae_dbp.decor.cost import gram_is_cheaper
from mae_dbp.errors import UserInputError

VARIANTS = ("standard", "gain", "triangular", "low_rank")


@dataclass(frozen=True)
class DecorSettings:
    """Per-layer DBP settings.

    kappa: weight of the whitening term V (0 = decorrelate only, 0.5 = decorrelate + whiten).
    lr: R learning rate (epsilon); the trainer may override it per step (a schedule).
    sample_frac: fraction of the input rows (tokens / conv positions) used for the update, in (0, 1].
    variant: one of ``VARIANTS``; rank: number of columns of U and V for ``low_rank``.
    seed: seed of the torch Generator that draws the subsample (offset per layer by apply()).
    """

    kappa: float = 0.0
    lr: float = 5e-4
    sample_frac: float = 0.1
    variant: str = "standard"
    rank: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.sample_frac <= 1.0:
            raise UserInputError(f"decor sample_frac must be in (0, 1], got {self.sample_frac}")
        if not 0.0 <= self.kappa <= 1.0:
            raise UserInputError(f"decor kappa must be in [0, 1], got {self.kappa}")
        if self.lr < 0:
            raise UserInputError(f"decor lr must be >= 0, got {self.lr}")
        if self.variant not in VARIANTS:
            raise UserInputError(f"decor variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.variant == "low_rank" and self.rank < 1:
            raise UserInputError(f"decor rank must be >= 1 for the low_rank variant, got {self.rank}")

    def to_dict(self) -> dict:
        return asdict(self)


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
    """A subsample kept as its decorrelated rows z = R x, (n, d), for the low-rank update path.

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


def gram_stats(xx: torch.Tensor, r: torch.Tensor, count: int, factors: Factors | None = None) -> SampleStats:
    """Dense statistics of z = R x from the input Gram matrix XᵀX (d, d) of ``count`` rows."""
    xx_rt = times_rt(xx, r, factors)  # XᵀX Rᵀ; R (XᵀX Rᵀ) = (XᵀX Rᵀ)ᵀ Rᵀ as XᵀX is symmetric
    return SampleStats(times_rt(xx_rt.T, r, factors), torch.diagonal(xx).sum(), r.new_tensor(float(count)))


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


def correlation_metric(second_moment: torch.Tensor) -> float:
    """Mean squared off-diagonal entry of the correlation of z, from S = mean(z zᵀ) (unitless)."""
    d = second_moment.shape[0]
    if d < 2:
        return 0.0
    scale = torch.diagonal(second_moment).clamp_min(1e-12).rsqrt()
    corr = second_moment * scale[:, None] * scale[None, :]
    off = corr.square().sum() - torch.diagonal(corr).square().sum()
    return float(off / (d * (d - 1)))


def _rows_metric(z: torch.Tensor, variances: torch.Tensor) -> float:
    """:func:`correlation_metric` of S = Zᵀ Z / n from the rows z (n, d) without a d x d matrix:
    with Y = Z diag(s)^-1/2, sum_ij corr_ij² = |Yᵀ Y|²_F / n² = |Y Yᵀ|²_F / n² (n x n)."""
    n, d = z.shape
    if d < 2:
        return 0.0
    scale = variances.clamp_min(1e-12).rsqrt()
    zs = z * scale[None, :]
    total = (zs @ zs.T).square().sum() / (n * n)
    diag = (variances * scale * scale).square().sum()
    return float((total - diag) / (d * (d - 1)))


def _step_and_metric(r: torch.Tensor, stats: SampleStats | SampleRows, kappa: float):
    """(G R, the metric of z, a function lr -> mean |z_new|² for ``gain``) from either form of statistics."""
    count = float(stats.count)
    if isinstance(stats, SampleRows):
        z = stats.z
        variances = z.square().sum(0) / count
        step = (z.T @ (z @ r)).mul_((1.0 - kappa) / count)  # (1 - kappa) S R with S = Zᵀ Z / n
        step.addcmul_(_row_scale(variances, kappa)[:, None], r)
        metric = _rows_metric(z, variances)

        def z_sq(lr: float) -> torch.Tensor:  # Z_new = Z (I - lr G), Z G = (1 - kappa) Z Zᵀ Z / n + Z diag(c)
            zg = (z @ z.T @ z).mul_((1.0 - kappa) / count).addcmul_(z, _row_scale(variances, kappa)[None, :])
            return (z - lr * zg).square().sum() / count

        return step, metric, z_sq
    s = stats.zz / count
    g = decor_gradient(s, kappa)

    def z_sq(lr: float) -> torch.Tensor:  # new R = M R_old with M = I - lr G, so mean |z_new|² = tr(M S Mᵀ)
        m = torch.eye(r.shape[0], dtype=r.dtype, device=r.device) - lr * g
        return ((m @ s) * m).sum()

    return g @ r, correlation_metric(s), z_sq


def low_rank_unstarted(u: torch.Tensor) -> bool:
    """True while U is all zero (R = I): the next :func:`low_rank_step` is the first, which sets V."""
    return not bool(u.any())


def low_rank_step(stats: SampleStats | SampleRows, u: torch.Tensor, v: torch.Tensor, kappa: float,
                  lr: float) -> float:
    """The ``low_rank`` step in place on the factors, from thin products only; returns the metric.

    U <- U - lr G (R V), V <- V - lr Rᵀ (G U) with R V = V + U (Vᵀ V), Rᵀ M = M + V (Uᵀ M) and
    G M = (1 - kappa) S M + diag(c) M (:func:`_row_scale`); S M costs 2·n·d·rank from the rows
    (S = Zᵀ Z / n) or d²·rank from dense statistics. Equals the dense step (G R) V, (G R)ᵀ U.

    The first step (U = 0, so R = I) first sets V to the ``rank`` leading eigenvectors of S (a d³
    eigendecomposition, once): the projected step can only move R within span(V), and the
    strongest correlations (e.g. the common direction of non-centred ReLU activations) lie there,
    which a random V of rank << d misses.
    """
    count = float(stats.count)
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
    if low_rank_unstarted(u):
        v.copy_(torch.linalg.eigh(dense())[1][:, -v.shape[1]:].flip(1))  # eigh sorts ascending
    c = _row_scale(variances, kappa)[:, None]

    def g_times(m: torch.Tensor) -> torch.Tensor:
        return s_times(m).mul_(1.0 - kappa).addcmul_(c, m)

    g_rv = g_times(v + u @ (v.T @ v))
    g_u = g_times(u)
    rt_g_u = g_u + v @ (u.T @ g_u)
    u.sub_(g_rv, alpha=lr)
    v.sub_(rt_g_u, alpha=lr)
    return metric


def update_r(
    r: torch.Tensor,
    stats: SampleStats | SampleRows,
    settings: DecorSettings,
    lr: float,
    u: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
) -> float:
    """Apply one update in place to R (and U, V for ``low_rank``); returns the metric of z before it.

    r: (d, d); stats: summed dense statistics or the rows of the subsample; lr: this step's size.
    """
    count = float(stats.count)
    if count <= 0:
        return float("nan")
    if settings.variant == "low_rank":
        assert u is not None and v is not None
        metric = low_rank_step(stats, u, v, settings.kappa, lr)
        torch.mm(u, v.T, out=r)
        r.diagonal().add_(1.0)  # R = I + U Vᵀ
        return metric
    step, metric, z_sq = _step_and_metric(r, stats, settings.kappa)
    if settings.variant == "triangular":
        step = torch.tril(step)
    r.sub_(step, alpha=lr)
    if settings.variant == "gain":
        new_sq = z_sq(lr)
        if new_sq > 0:
            r.mul_(torch.sqrt(stats.xx / count / new_sq))
    return metric
