"""The DBP side of training in one small object: the R learning rate and when R is updated.

The generic loop calls :meth:`DecorPolicy.start` once (with its gradient accumulation steps),
:meth:`DecorPolicy.before_step` before clipping and each optimizer step, :meth:`DecorPolicy.after_step`
after it and :meth:`DecorPolicy.check_ranks` once per epoch; it reads no ``decor`` config key itself.
When micro-batches accumulate, the fused layers defer W's gradient (dL/dA summed over the
micro-batches, Rᵀ applied once in ``before_step``: :func:`mae_dbp.decor.defer_weight_grads`). The R
learning rate has exactly one owner, here: ``decor.lr`` x its schedule (``decor.lr_schedule``,
with R's own linear warm-up over ``decor.warmup_steps``) x the instability guard's scale (0 once the guard stopped R updates). ``decor.update_every`` = k
makes the R step every k-th optimizer step, from the subsamples of all k steps (the layers add them
up until ``decor.update``), with k x the R lr so R moves about as far per optimizer step.
"""

from __future__ import annotations

import math

from torch import nn

from mae_dbp import decor
from mae_dbp.config import DecorConfig
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.schedules import WarmupCosine, decor_lr


class DecorPolicy:
    """R updates of the decorrelated layers under ``root`` (none when ``cfg.enabled`` is false)."""

    def __init__(self, root: nn.Module, cfg: DecorConfig) -> None:
        self.root = root
        self.enabled = cfg.enabled
        self.base_lr = cfg.lr if cfg.enabled else 0.0
        self.schedule_kind = cfg.lr_schedule
        self.update_every = cfg.update_every
        self.warmup_steps = cfg.warmup_steps
        self.defer_weight_grad = cfg.defer_weight_grad
        self.lr = 0.0  # the R lr of the last step
        self.metrics: dict[str, float] = {}  # {layer: correlation metric} of the last update
        self.ranks_checked = 0

    def start(self, accumulation_steps: int) -> None:
        """Defer W's gradient to one Rᵀ per optimizer step when gradients accumulate over micro-batches."""
        decor.defer_weight_grads(self.root, self.enabled and self.defer_weight_grad and accumulation_steps > 1)

    def before_step(self) -> None:
        """After the last backward of an optimizer step, before clipping: W's gradient from the summed dL/dA."""
        if self.enabled:
            decor.finish_weight_grads(self.root)

    def after_step(self, step: int, main: WarmupCosine, guard: InstabilityGuard) -> None:
        """After optimizer step ``step`` (0-based): one R step (all ranks, statistics summed over
        them) when ``step + 1`` is a multiple of ``update_every``, with the R lr x ``update_every``."""
        scheduled = decor_lr(self.schedule_kind, step, main.total_steps, self.base_lr, main(step), main.peak,
                             self.warmup_steps)
        self.lr = 0.0 if guard.decor_stopped else guard.decor_scale * scheduled
        if self.enabled and (step + 1) % self.update_every == 0:
            self.metrics = decor.update(self.root, lr=self.lr * self.update_every) or self.metrics

    def check_ranks(self, epoch: int, world_size: int) -> None:
        """Raise if the processes hold different R (they must stay bit-identical)."""
        if self.enabled and not decor.ranks_agree(self.root):
            raise RuntimeError(f"epoch {epoch}: the decorrelation matrices differ between processes")
        self.ranks_checked = world_size if self.enabled else 0

    def mean_metric(self) -> float:
        return sum(self.metrics.values()) / len(self.metrics) if self.metrics else math.nan

    def summary(self) -> dict:
        return {"decor_sites": sorted(n for n, _ in decor.decor_modules(self.root)),
                "decor_ranks_checked": self.ranks_checked}
