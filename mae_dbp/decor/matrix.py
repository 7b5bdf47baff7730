"""The decorrelation matrix R: settings, statistics, the update rule, its variants and the metric.

For an input x (d features), the decorrelated input is z = R x. One update, from a subsample of n
input rows X (n, d) with Z = X Rᵀ:

    S   = Zᵀ Z / n                         second moment of z, (d, d)
    C   = S with its diagonal set to 0     off-diagonal covariance
    V   = diag(diag(S) - 1)                variance error (scales the *rows* of R: V R = diag(v) R)
    G   = (1 - kappa) C + kappa V
    R  <- R - lr * G R

Variants: ``gain`` rescales the new R so the mean squared norm of z equals that of x;
``triangular`` masks the step to the lower triangle (R stays lower-triangular); ``low_rank`` keeps
R = I + U Vᵀ (U, V: (d, rank)) and moves the factors along the projected step
U <- U - lr (G R) V, V <- V - lr (G R)ᵀ U.

Everything here works on plain tensors; :mod:`mae_dbp.decor.layers` holds the module state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

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
    """Sufficient statistics of one subsample, summable across processes.

    zz: Zᵀ Z summed over rows, (d, d); xx: sum of squared input entries, scalar tensor;
    count: number of rows, scalar tensor. All float64 when summed across ranks is not needed,
    otherwise the R dtype.
    """

    zz: torch.Tensor
    xx: torch.Tensor
    count: torch.Tensor

    def flat(self) -> torch.Tensor:
        return torch.cat([self.zz.reshape(-1), self.xx.reshape(1), self.count.reshape(1)])

    @classmethod
    def from_flat(cls, flat: torch.Tensor, d: int) -> "SampleStats":
        return cls(flat[: d * d].view(d, d), flat[d * d], flat[d * d + 1])


def sample_stats(x: torch.Tensor | None, r: torch.Tensor) -> SampleStats:
    """Statistics of z = R x for the stored input rows x (n, d); zeros when there is no sample."""
    d = r.shape[0]
    if x is None:
        zero = r.new_zeros(())
        return SampleStats(r.new_zeros(d, d), zero, zero.clone())
    x = x.to(r.dtype)
    n = x.shape[0]
    if n > 2 * d:  # R (XᵀX) Rᵀ costs n·d² + 2·d³ multiply-adds, cheaper than Zᵀ Z's 2·n·d² here
        xx = x.T @ x
        zz = r @ xx @ r.T
        return SampleStats(zz, torch.diagonal(xx).sum(), r.new_tensor(float(n)))
    z = x @ r.T
    return SampleStats(z.T @ z, (x * x).sum(), r.new_tensor(float(n)))


def decor_gradient(second_moment: torch.Tensor, kappa: float) -> torch.Tensor:
    """G = (1 - kappa) C + kappa V for the second moment S = mean(z zᵀ), (d, d)."""
    diag = torch.diagonal(second_moment)
    g = second_moment * (1.0 - kappa)
    g.diagonal().copy_(kappa * (diag - 1.0))
    return g


def correlation_metric(second_moment: torch.Tensor) -> float:
    """Mean squared off-diagonal entry of the correlation of z, from S = mean(z zᵀ) (unitless)."""
    d = second_moment.shape[0]
    if d < 2:
        return 0.0
    scale = torch.diagonal(second_moment).clamp_min(1e-12).rsqrt()
    corr = second_moment * scale[:, None] * scale[None, :]
    off = corr.square().sum() - torch.diagonal(corr).square().sum()
    return float(off / (d * (d - 1)))


def update_r(
    r: torch.Tensor,
    stats: SampleStats,
    settings: DecorSettings,
    lr: float,
    u: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
) -> float:
    """Apply one update in place to R (and U, V for ``low_rank``); returns the metric of z before it.

    r: (d, d); stats: summed statistics of the subsample; lr: the step size for this step.
    """
    count = float(stats.count)
    if count <= 0:
        return float("nan")
    s = stats.zz / count
    metric = correlation_metric(s)
    step = decor_gradient(s, settings.kappa) @ r  # G R, (d, d)
    if settings.variant == "triangular":
        step = torch.tril(step)
    if settings.variant == "low_rank":
        assert u is not None and v is not None
        u_old = u.clone()
        u.sub_(lr * (step @ v))
        v.sub_(lr * (step.T @ u_old))
        r.copy_(torch.eye(r.shape[0], dtype=r.dtype, device=r.device) + u @ v.T)
    else:
        r.sub_(lr * step)
    if settings.variant == "gain":
        # new R = M R_old with M = I - lr G, so mean |z_new|^2 = tr(M S Mᵀ)
        m = torch.eye(r.shape[0], dtype=r.dtype, device=r.device) - lr * decor_gradient(s, settings.kappa)
        z_sq = ((m @ s) * m).sum()
        x_sq = stats.xx / count
        if z_sq > 0:
            r.mul_(torch.sqrt(x_sq / z_sq))
    return metric
