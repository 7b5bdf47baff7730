"""Closed-form ridge regression: W = (XcᵀXc / N + λ · tr / D · I)⁻¹ XcᵀYc / N, in float64."""

from __future__ import annotations

import torch
from torch import Tensor


def fit_ridge(x: Tensor, y: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """(weight (D, K), bias (K,)) of the ridge regression of targets ``y`` (N, K) on features ``x``
    (N, D); ``ridge`` is relative to the mean feature variance, so it does not depend on the scale."""
    x, y = x.double(), y.double()
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc = x - mean_x
    gram = xc.T @ xc / x.shape[0]
    penalty = ridge * gram.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + penalty * eye, xc.T @ (y - mean_y) / x.shape[0])
    return weight, mean_y - mean_x @ weight


def predict(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Scores (N, K) of features ``x`` (N, D)."""
    return x.double() @ weight + bias
