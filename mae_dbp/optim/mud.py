"""MUD, MomentUm Decorrelation (Southworth and Thomas 2026, arXiv 2603.17970), from the paper's equations.

Muon orthogonalises each weight matrix's momentum with a few Newton-Schulz iterations (a polar
factor); MUD whitens it with one triangular pass instead. For a matrix parameter θ (n x m, a conv
kernel flattened to (out, in·K·K)) with gradient G, momentum β, lr η, weight decay λ:

    V <- β V + G                    momentum buffer
    M  = G + β V                    Nesterov look-ahead (``nesterov=False``: M = V)
    Q  = M, transposed when n > m   so that Q has at most as many rows as columns
    p times (``passes``, default 1):
        Q <- diag(1 / (r + eps)) Q,  r_i = ||Q_i,:||      rows to unit length
        T  = tril(Q Qᵀ)                                  lower triangle of the Gram, diagonal included
        Q <- T⁻¹ Q                                       one forward substitution (Gauss-Seidel-like)
        Q <- diag(1 / (r + eps)) Q,  r_i = ||Q_i,:||      rows to unit length again
    θ <- (1 - η λ) θ - η · 0.2 · sqrt(max(n, m)) · Q     (Q transposed back)

Row-orthonormal matrices are fixed points (T = I). The scale 0.2·sqrt(max(n, m)) gives the update
the RMS of an AdamW update (as timm's Muon with ``adjust_lr_fn="match_rms_adamw"``), so AdamW's lr
range carries over. Parameters that are not matrices (biases, norms, tokens, position embeddings
with a leading 1) and groups with ``use_fallback=True`` take AdamW (``betas``, ``eps``), as Muon's.
Every step stays on the device: nothing is read back to the host.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch


def is_matrix(param: torch.Tensor) -> bool:
    """Whether MUD whitens ``param``: 2-D or more, no unit size among the first two dimensions."""
    return param.ndim >= 2 and param.shape[0] > 1 and param.shape[1] > 1


def whiten_rows(q: torch.Tensor, passes: int = 1, eps: float = 1e-7) -> torch.Tensor:
    """MUD's inner map of ``q`` (n x m, n <= m): ``passes`` x (unit rows, T⁻¹ Q with T = tril(Q Qᵀ), unit rows)."""
    for _ in range(passes):
        q = q / (q.norm(dim=1, keepdim=True) + eps)
        q = torch.linalg.solve_triangular(torch.tril(q @ q.mT), q, upper=False)
        q = q / (q.norm(dim=1, keepdim=True) + eps)
    return q


def mud_direction(momentum: torch.Tensor, passes: int = 1, eps: float = 1e-7) -> torch.Tensor:
    """The whitened update of a matrix parameter's look-ahead ``momentum`` (any shape with ndim >= 2,
    flattened to (shape[0], rest)), scaled by 0.2·sqrt(max(n, m)) and shaped like ``momentum``."""
    q = momentum.reshape(momentum.shape[0], -1).float()
    n, m = q.shape
    tall = n > m
    q = whiten_rows(q.mT if tall else q, passes, eps)
    q = q.mT if tall else q
    return (0.2 * math.sqrt(max(n, m)) * q).reshape(momentum.shape).to(momentum.dtype)


class Mud(torch.optim.Optimizer):
    """MUD for matrix parameters, AdamW for the rest (see the module docstring).

    ``lr`` and ``weight_decay`` (decoupled) apply to both parts; ``momentum`` / ``nesterov`` /
    ``passes`` / ``eps`` to MUD; ``betas`` / ``adam_eps`` to the AdamW fallback."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.95, nesterov: bool = True,
                 passes: int = 1, eps: float = 1e-7, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.95), adam_eps: float = 1e-8) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or passes < 1:
            raise ValueError(f"Mud: expected lr >= 0, weight_decay >= 0, 0 <= momentum < 1, passes >= 1; got "
                             f"lr={lr}, weight_decay={weight_decay}, momentum={momentum}, passes={passes}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, passes=passes, eps=eps,
                                      weight_decay=weight_decay, betas=tuple(betas), adam_eps=adam_eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if decay:
                    param.mul_(1 - lr * decay)
                if is_matrix(param) and not group.get("use_fallback", False):
                    self._mud(param, group)
                else:
                    self._adamw(param, group)
        return loss

    def _mud(self, param: torch.Tensor, group: dict) -> None:
        grad, state, beta = param.grad, self.state[param], group["momentum"]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buffer = state["momentum_buffer"].mul_(beta).add_(grad)
        ahead = grad.add(buffer, alpha=beta) if group["nesterov"] else buffer
        param.add_(mud_direction(ahead, group["passes"], group["eps"]), alpha=-group["lr"])

    def _adamw(self, param: torch.Tensor, group: dict) -> None:
        grad, state = param.grad, self.state[param]
        (beta1, beta2), eps = group["betas"], group["adam_eps"]
        if "exp_avg" not in state:
            state["step"] = 0  # a Python int: no host read per step
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
        state["step"] += 1
        exp_avg = state["exp_avg"].lerp_(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
        denominator = (exp_avg_sq / correction2).sqrt_().add_(eps)
        param.addcdiv_(exp_avg, denominator, value=-group["lr"] / correction1)
