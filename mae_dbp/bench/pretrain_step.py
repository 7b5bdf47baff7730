"""``bench pretrain``: MAE training-step time with DBP vs BP, same model and data, alternating.

A step is what the trainer does per optimizer step: forward, backward, AdamW step and (DBP) the R
update, every ``decor.update_every``-th step as in training. Both models are built from the same config and seed; inputs are random images of the
configured size and batch (the data pipeline is the same for both and is left out).
"""

from __future__ import annotations

import copy

import torch

from mae_dbp import decor
from mae_dbp.bench.timing import time_alternating
from mae_dbp.train.pretrain import PretrainConfig, build_model


def training_step(model: torch.nn.Module, images: torch.Tensor, decor_root: torch.nn.Module | None, r_lr: float = 0.0,
                  update_every: int = 1):
    """A closure running one optimizer step; with ``decor_root``, the R step (lr ``r_lr`` x k) every
    k = ``update_every``-th call, as the trainer's DecorPolicy does."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    model.train()
    calls = [0]

    def step() -> None:
        loss = model(images)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        calls[0] += 1
        if decor_root is not None and calls[0] % update_every == 0:
            decor.update(decor_root, lr=r_lr * update_every)

    return step


def run_pretrain_bench(config: PretrainConfig, steps: int, batch_size: int | None = None) -> dict:
    """{"bp_step_s", "dbp_step_s", "overhead_ratio", ...} for the config's model and batch size."""
    model_cfg = config.model
    batch = batch_size or config.train.batch_size
    dbp_cfg = copy.deepcopy(config)
    dbp_cfg.decor.enabled = True
    bp_cfg = copy.deepcopy(config)
    bp_cfg.decor.enabled = False
    torch.manual_seed(0)
    dbp_model, sites = build_model(dbp_cfg)
    torch.manual_seed(0)
    bp_model, _ = build_model(bp_cfg)
    images = torch.randn(batch, model_cfg.in_chans, model_cfg.img_size, model_cfg.img_size)
    k = config.decor.update_every  # a timed sample is a block of k steps, so it holds one R update
    steps_of = {"bp": training_step(bp_model, images, None),
                "dbp": training_step(dbp_model, images, dbp_model.encoder, config.decor.lr, k)}
    blocks = {name: (lambda step=step: [step() for _ in range(k)]) for name, step in steps_of.items()}
    times = {name: seconds / k for name, seconds in time_alternating(blocks, repeats=steps, warmup=2).items()}
    return {
        "bp_step_s": times["bp"], "dbp_step_s": times["dbp"], "overhead_ratio": times["dbp"] / times["bp"],
        "batch_size": batch, "encoder": model_cfg.encoder, "decor_sites": len(sites),
        "threads": torch.get_num_threads(), "update_every": config.decor.update_every,
    }
