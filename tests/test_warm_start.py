"""The DBP warm start (``decor.until``): decorrelate early, fuse R into W mid-run, continue as BP."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from torch import nn

from mae_dbp import decor
from mae_dbp.config import DecorConfig, GuardConfig
from mae_dbp.train import checkpoints
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.guard import InstabilityGuard
from mae_dbp.train.pretrain import pretrain
from mae_dbp.train.schedules import WarmupCosine
from tests.conftest import perturb_r, tiny_pretrain


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    decor.apply(model, ["0", "2"], lr=0.05, sample_frac=1.0)
    return model


def test_switch_fuses_in_place_and_keeps_the_optimizer_state():
    model = mlp()
    # R steps after steps 2 and 4; the switch after step 3 (epoch 3 of 1 step each) takes R as the
    # update of step 2 left it and W as step 3's optimizer step left it
    policy = DecorPolicy(model, DecorConfig(sites=["0", "2"], lr=0.05, until=3, update_every=2))
    policy.start(accumulation_steps=1, steps_per_epoch=1, total_steps=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule, guard = WarmupCosine(peak=1e-2, total_steps=6), InstabilityGuard(GuardConfig())
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 6, generator=g, dtype=torch.float64) for _ in range(5)]
    weights = [model[0].weight, model[2].weight]
    for step, x in enumerate(batches):
        if step == 2:
            before = copy.deepcopy(model)  # DBP as it will be at the switch, after this step's update
        model.train()
        model(x).square().mean().backward()
        optimizer.step()
        if step == 2:
            before.load_state_dict(model.state_dict())
        optimizer.zero_grad(set_to_none=True)
        policy.after_step(step, schedule, guard)
        if step == 2:  # the switch happened after step 3 (index 2): no DBP left, same function
            assert policy.switched and not decor.decor_modules(model)
            assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear]
            assert model[0].weight is weights[0] and model[2].weight is weights[1]  # optimizer state carries over
            assert all(optimizer.state[w]["step"] == 3 for w in weights)
            probe = torch.randn(5, 6, generator=g, dtype=torch.float64)
            with torch.no_grad(), decor.explicit(before):
                expected = before.eval()(probe)
            assert (model.eval()(probe) - expected).abs().max() <= 1e-5
    assert all(optimizer.state[w]["step"] == 5 for w in weights)  # trained on as BP with the same optimizer
    assert policy.summary()["decor_fused_at_step"] == 3


def test_fraction_places_the_switch_on_the_steps():
    policy = DecorPolicy(mlp(), DecorConfig(sites=["0", "2"], until=0.3))
    policy.start(accumulation_steps=1, steps_per_epoch=10, total_steps=100)
    assert policy.switch_step == 30
    with pytest.raises(ValueError, match="decor.until"):
        DecorConfig(until=2.5)
    assert DecorPolicy(mlp(), DecorConfig(enabled=False, until=0.5)).until is None


def test_states_load_across_the_switch():
    model = mlp()
    perturb_r(model, 0.1)
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad(), decor.explicit(model):
        expected = model.eval()(x)
    dbp_state = copy.deepcopy(model.state_dict())
    plain = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    plain.load_state_dict(decor.fused_state_dict(dbp_state))  # strict: only plain keys remain
    assert (plain(x) - expected).abs().max() <= 1e-10
    fresh = mlp()  # a decorrelated model takes a plain state as R = I: the same function
    fresh.load_state_dict(plain.state_dict())
    assert all(torch.equal(layer.R, torch.eye(layer.decor_dim, dtype=torch.float64))
               for _, layer in decor.decor_modules(fresh))
    with torch.no_grad():
        assert (fresh.eval()(x) - expected).abs().max() <= 1e-10


@pytest.mark.slow
def test_resume_across_the_switch_continues_exactly(tmp_path, tiny_data):
    data = tiny_data

    def config(stop=None):
        c = tiny_pretrain(data, epochs=4)
        c.decor.until = 2  # fused after epoch 2
        c.train.stop_after_epoch = stop
        return c

    straight = pretrain(config(), out=tmp_path / "straight")
    assert straight["decor_fused_at_step"] == 2 * straight["steps"] // 4
    for stop in (1, 3):  # resumed before and after the switch
        run = tmp_path / f"split{stop}"
        pretrain(config(stop), out=run)
        pretrain(resume=run)  # the run's own config.yaml (stop_after_epoch is never saved)
        rows = {name: list(csv.DictReader(open(tmp_path / name / "metrics.csv"))) for name in ("straight", run.name)}
        assert len(rows[run.name]) == 4
        for a, b in zip(rows["straight"], rows[run.name]):
            for key in ("step", "train_loss", "val_loss"):
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-9), (stop, key, a, b)
    state = checkpoints.model_state(tmp_path / "straight" / "last")
    assert not any(k.endswith(".R") for k in state)  # the run ended as plain BP
    assert float(rows["straight"][-1]["decor_lr"]) == 0.0
