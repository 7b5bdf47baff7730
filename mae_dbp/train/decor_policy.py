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

``decor.until`` is a DBP warm start: after that optimizer step the policy fuses R into W
(:func:`mae_dbp.decor.fuse`, in place, keeping each weight's Parameter so the optimizer state
carries over) and the run continues as plain BP at BP's step cost, in the same run directory.
Checkpoints from either side of the switch load into the model of the other (a plain layer's state
loads as R = I; a decorrelated state is fused on load: :func:`mae_dbp.decor.fused_state_dict`).

The metrics of the last update stay on the device (0-dim tensors) until :meth:`site_metrics` /
:meth:`mean_metric` read them, once per logged epoch: no host sync per optimizer step.
"""

from __future__ import annotations

import math

import torch
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
        self.schedule_kind, self.hold = cfg.lr_schedule, cfg.lr_hold
        self.update_every = cfg.update_every
        self.warmup_steps = cfg.warmup_steps
        self.defer_weight_grad = cfg.defer_weight_grad
        self.until = cfg.until if cfg.enabled else None
        self.switch_step: int | None = None  # optimizer steps after which R is fused (warm start)
        self.switched = False
        self.lr = 0.0  # the R lr of the last step
        self.metrics: dict[str, torch.Tensor] = {}  # {layer: correlation metric} of the last update
        self.ranks_checked = 0

    def start(self, accumulation_steps: int, steps_per_epoch: int = 0, total_steps: int = 0) -> None:
        """Defer W's gradient to one Rᵀ per optimizer step when gradients accumulate over micro-batches;
        place the warm start's switch (``decor.until``) on the run's optimizer steps."""
        decor.defer_weight_grads(self.root, self.enabled and self.defer_weight_grad and accumulation_steps > 1)
        if self.until is not None:
            steps = math.ceil(self.until * total_steps) if self.until < 1 else round(self.until) * steps_per_epoch
            self.switch_step = max(1, steps)

    def resume(self, step: int) -> None:
        """After loading a checkpoint at optimizer step ``step``: past the switch, fuse as the run did."""
        if self.switch_step is not None and step >= self.switch_step and not self.switched:
            self.switch()

    def switch(self) -> None:
        """The warm start's switch: R fused into W in place; from here on plain BP."""
        decor.fuse(self.root)
        self.switched, self.enabled, self.lr = True, False, 0.0
        self.root.register_load_state_dict_pre_hook(_fuse_decorrelated_state)

    def before_step(self) -> None:
        """After the last backward of an optimizer step, before clipping: W's gradient from the summed dL/dA."""
        if self.enabled:
            decor.finish_weight_grads(self.root)

    def after_step(self, step: int, main: WarmupCosine, guard: InstabilityGuard) -> None:
        """After optimizer step ``step`` (0-based): one R step (all ranks, statistics summed over
        them) when ``step + 1`` is a multiple of ``update_every``, with the R lr x ``update_every``."""
        if not self.enabled:
            return
        scheduled = decor_lr(self.schedule_kind, step, main.total_steps, self.base_lr, main(step), main.peak,
                             self.warmup_steps, self.hold)
        self.lr = 0.0 if guard.decor_stopped else guard.decor_scale * scheduled
        if (step + 1) % self.update_every == 0:
            self.metrics = decor.update(self.root, lr=self.lr * self.update_every) or self.metrics
        if self.switch_step is not None and step + 1 >= self.switch_step:
            self.switch()

    def check_ranks(self, epoch: int, world_size: int) -> None:
        """Raise if the processes hold different R (they must stay bit-identical)."""
        if self.enabled and not decor.ranks_agree(self.root):
            raise RuntimeError(f"epoch {epoch}: the decorrelation matrices differ between processes")
        self.ranks_checked = world_size if self.enabled else 0

    def site_metrics(self) -> dict[str, float]:
        """{layer: metric} of the last update as numbers (reads them from the device: call when logging)."""
        if not self.metrics:
            return {}
        values = torch.stack([m.detach().float().cpu() for m in self.metrics.values()]).tolist()
        return dict(zip(self.metrics, values))

    def mean_metric(self) -> float:
        values = [v for v in self.site_metrics().values() if math.isfinite(v)]
        return sum(values) / len(values) if values else math.nan

    def summary(self) -> dict:
        sites = sorted(self.metrics) if self.switched else sorted(n for n, _ in decor.decor_modules(self.root))
        return {"decor_sites": sites, "decor_ranks_checked": self.ranks_checked,
                **({"decor_fused_at_step": self.switch_step} if self.switched else {})}


def _fuse_decorrelated_state(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook of a warm-started model after its switch: a checkpoint from before
    the switch (decorrelated layers) loads as its fused equivalent."""
    local = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not any(k.endswith(".R") for k in local):
        return
    for key in list(state_dict):
        if key.startswith(prefix):
            del state_dict[key]
    state_dict.update({prefix + k: v for k, v in decor.fused_state_dict(local).items()})
