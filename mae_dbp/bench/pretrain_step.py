"""``bench pretrain``: MAE training-step time with DBP vs BP, same model and data, alternating.

A step is what the trainer does per optimizer step: forward, backward, AdamW step and (DBP) the R
update through the trainer's :class:`~mae_dbp.train.decor_policy.DecorPolicy` (its R lr, every
``decor.update_every``-th step). Both models are built from the same config and seed; inputs are
random images of the model's size and the configured batch (the data pipeline is the same for both
and is left out).
"""

from __future__ import annotations

import copy

import torch

from mae_dbp.bench.timing import time_alternating
from mae_dbp.config import GuardConfig
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.pretrain import PretrainConfig, build_model
from mae_dbp.train.schedules import WarmupCosine


def training_step(model: torch.nn.Module, images: torch.Tensor, policy: DecorPolicy | None = None):
    """A closure running one optimizer step; with a ``policy``, the R step after it as the trainer
    does (the policy's R lr and ``update_every``; a constant main lr of 1e-4)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    schedule, guard = WarmupCosine(1e-4, total_steps=10**9, floor=1e-4), InstabilityGuard(GuardConfig(enabled=False))
    model.train()
    steps = [0]

    def step() -> None:
        loss = model(images)[0]
        loss.backward()
        if policy is not None:
            policy.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if policy is not None:
            policy.after_step(steps[0], schedule, guard)
        steps[0] += 1

    return step


def run_pretrain_bench(config: PretrainConfig, steps: int, batch_size: int | None = None) -> dict:
    """{"bp_step_s", "dbp_step_s", "overhead_ratio", ...} for the config's model and batch size."""
    batch = batch_size or config.train.batch_size
    dbp_cfg = copy.deepcopy(config)
    dbp_cfg.decor.enabled = True
    bp_cfg = copy.deepcopy(config)
    bp_cfg.decor.enabled = False
    torch.manual_seed(0)
    dbp_model, sites = build_model(dbp_cfg)
    torch.manual_seed(0)
    bp_model, _ = build_model(bp_cfg)
    images = torch.randn(batch, dbp_model.in_chans, dbp_model.img_size, dbp_model.img_size)
    k = dbp_cfg.decor.update_every  # a timed sample is a block of k steps, so it holds one R update
    steps_of = {"bp": training_step(bp_model, images),
                "dbp": training_step(dbp_model, images, DecorPolicy(dbp_model.encoder, dbp_cfg.decor))}
    blocks = {name: (lambda step=step: [step() for _ in range(k)]) for name, step in steps_of.items()}
    times = {name: seconds / k for name, seconds in time_alternating(blocks, repeats=steps, warmup=2).items()}
    return {
        "bp_step_s": times["bp"], "dbp_step_s": times["dbp"], "overhead_ratio": times["dbp"] / times["bp"],
        "batch_size": batch, "encoder": config.model.encoder, "decor_sites": len(sites),
        "threads": torch.get_num_threads(), "update_every": k,
    }
