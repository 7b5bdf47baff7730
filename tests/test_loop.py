"""Loop parts: the batch plan, the lr schedule, AdamW groups and the DBP policy (R lr's one owner)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.config import DecorConfig, GuardConfig, TrainConfig
from mae_dbp.errors import UserInputError
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard, non_finite_rows
from mae_dbp.train.setup import batch_plan
from mae_dbp.train.schedules import WarmupCosine, decor_lr


@pytest.mark.parametrize("effective, most, world, plan", [
    (8, 8, 1, (8, 1)), (8, 8, 2, (4, 1)), (64, 8, 2, (8, 4)), (12, 5, 2, (3, 2)), (4096, 256, 8, (256, 2)),
])
def test_batch_plan_keeps_the_configured_effective_batch(effective, most, world, plan):
    micro, accum = batch_plan(TrainConfig(effective_batch=effective, batch_size=most), world)
    assert (micro, accum) == plan and micro * accum * world == effective and micro <= most


def test_batch_plan_refuses_what_cannot_be_split():
    with pytest.raises(UserInputError, match="train.effective_batch: expected a multiple of the 3 processes, got 10"):
        batch_plan(TrainConfig(effective_batch=10, batch_size=4), 3)


def test_warmup_cosine_against_the_formula():
    schedule = WarmupCosine(peak=1.0, total_steps=110, warmup_steps=10, floor=0.1)
    assert [schedule(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    for step in (10, 40, 60, 110, 200):
        progress = min(1.0, (step - 10) / 100)
        assert schedule(step) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def test_r_warmup_ramps_each_schedule_linearly_from_zero():
    # constant, w = 4: (step + 1) / 4 x base for steps 0-3, then base
    assert [decor_lr("constant", s, 100, 0.2, 1.0, 1.0, warmup_steps=4) for s in range(6)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert [decor_lr("constant", s, 100, 0.2, 1.0, 1.0) for s in (0, 3)] == [0.2, 0.2]  # 0 = no warm-up
    # follow at main lr 0.5 of peak, step 1 of w = 8: 2/8 x 0.5 x base; cosine at step 50 of 100: half-way
    assert decor_lr("follow", 1, 100, 0.2, 1e-3, 2e-3, warmup_steps=8) == pytest.approx(0.2 * 0.25 * 0.5)
    assert decor_lr("cosine", 50, 100, 0.2, 1.0, 1.0, warmup_steps=8) == pytest.approx(0.1)
    assert decor_lr("cosine", 1, 100, 0.2, 1.0, 1.0, warmup_steps=8) == pytest.approx(
        0.25 * 0.2 * 0.5 * (1 + math.cos(math.pi * 0.01)))


def test_cosine_r_schedule_holds_then_decays():
    # hold 0.25 of 100 steps at the base, then a cosine over the remaining 75: half-way at step 62.5
    assert [decor_lr("cosine", s, 100, 0.2, 1.0, 1.0, hold=0.25) for s in (0, 25)] == [0.2, 0.2]
    assert decor_lr("cosine", 62.5, 100, 0.2, 1.0, 1.0, hold=0.25) == pytest.approx(0.1)
    assert decor_lr("cosine", 100, 100, 0.2, 1.0, 1.0, hold=0.25) == pytest.approx(0.0, abs=1e-12)
    assert decor_lr("cosine", 50, 100, 0.2, 1.0, 1.0) == pytest.approx(0.1)  # hold 0: over the whole run


def test_policy_applies_the_r_warmup_with_update_every():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))
    decor.apply(model, ["0"])
    reference = copy.deepcopy(model)
    policy = DecorPolicy(model, DecorConfig(lr=0.1, warmup_steps=10, update_every=2))
    x = torch.randn(64, 6)
    model(x), reference(x)
    guard, main = InstabilityGuard(GuardConfig()), WarmupCosine(peak=1.0, total_steps=100, warmup_steps=20)
    policy.after_step(0, main, guard)
    assert policy.lr == pytest.approx(0.01) and torch.equal(model[0].R, torch.eye(6))  # no R step at step 0
    policy.after_step(3, main, guard)  # step 4 of 10 in R's warm-up: 0.04, an R step with 2 x 0.04
    assert policy.lr == pytest.approx(0.04)
    decor.update(reference, lr=0.08)
    assert torch.equal(model[0].R, reference[0].R) and not torch.equal(model[0].R, torch.eye(6))
    policy.after_step(10, main, guard)
    assert policy.lr == pytest.approx(0.1)


def test_policy_owns_the_r_lr_schedule_times_guard_scale():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4))
    decor.apply(model, ["0"])
    reference = copy.deepcopy(model)
    guard = InstabilityGuard(GuardConfig())
    guard.record_restore("test", epoch=1, step=0)  # scale 0.5
    policy = DecorPolicy(model, DecorConfig(lr=0.1, lr_schedule="follow"))
    main = WarmupCosine(peak=2e-3, total_steps=10, warmup_steps=4)
    x = torch.randn(64, 6)
    model(x), reference(x)
    policy.after_step(1, main, guard)
    expected = 0.1 * (main(1) / 2e-3) * 0.5  # base x follow (0.5 in warm-up) x guard scale
    assert policy.lr == pytest.approx(expected) == pytest.approx(0.025)
    decor.update(reference, lr=expected)
    assert torch.equal(model[0].R, reference[0].R) and not torch.equal(model[0].R, torch.eye(6))
    guard.decor_stopped = True
    policy.after_step(2, main, guard)
    assert policy.lr == 0.0


def test_disabled_policy_never_updates_and_timm_groups_skip_decay_on_1d():
    from timm.optim import param_groups_weight_decay

    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    policy = DecorPolicy(model, DecorConfig(enabled=False))
    policy.after_step(0, WarmupCosine(1.0, 1), InstabilityGuard(GuardConfig()))
    assert policy.lr == 0.0 and policy.summary()["decor_sites"] == []
    groups = {g["weight_decay"]: g["params"] for g in param_groups_weight_decay(model, 0.05)}
    assert [p.shape for p in groups[0.05]] == [torch.Size([3, 3])] and len(groups[0.0]) == 3


def test_non_finite_rows():
    batch = torch.zeros(4, 2, 3, 3)
    batch[1, 0, 0, 0], batch[3, 1, 2, 2] = math.nan, math.inf
    assert non_finite_rows(batch) == [1, 3]
