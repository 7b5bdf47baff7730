"""The loop reads its numbers to the host once per check interval, not per micro-batch, whatever
the number of DBP layers; the guard acts on the interval."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mae_dbp import decor
from mae_dbp.bench.host_reads import HostReads
from mae_dbp.config import DecorConfig
from mae_dbp.run_dir import RunDir
from mae_dbp.train import checkpoints
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.loop import Task, train_one_epoch
from mae_dbp.train.pretrain import PretrainConfig
from mae_dbp.train.setup import setup

pytestmark = pytest.mark.slow  # each run builds an accelerator and trains an epoch: seconds


class Pairs(Dataset):
    """64 seeded (x (8,), y (1,)) pairs; ``poison`` (an index) gets a loss of nan through its y."""

    def __init__(self, poison: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
        if poison is not None:
            self.y[poison] = math.nan

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class Regression(Task):
    def __init__(self, layers: int) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(layers)], nn.Linear(8, 1))

    def train_loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        return (model(x) - y).square().mean()


def _run(tmp_path, layers: int, dbp_layers: int, check_every: int | None, accumulate: int = 1, poison=None):
    """A run of the toy task: 64 pairs, batches of 8 (x ``accumulate`` per step), DBP on the first
    ``dbp_layers`` Linear layers; returns (run, task)."""
    config = PretrainConfig()
    config.train.batch_size, config.train.effective_batch = 8 // accumulate, 8
    config.train.epochs, config.train.base_lr, config.train.warmup_epochs = 1, 0.01, 0
    config.train.check_every, config.log.emissions = check_every, False
    task = Regression(layers)
    sites = [f"{i}.0" for i in range(dbp_layers)]
    if sites:
        decor.apply(task.model, sites, lr=0.01)
    policy = DecorPolicy(task.model, DecorConfig(enabled=bool(sites), sites=sites, lr=0.01))
    run = setup(config, task, policy, Pairs(poison), Pairs(), RunDir(tmp_path / f"run{layers}{dbp_layers}{check_every}"),
                False)
    return run, task


def checks(steps: int, every: int) -> int:
    """Check points of an epoch of ``steps`` optimizer steps: every ``every``-th step and the last."""
    return len({s for s in range(steps) if (s + 1) % every == 0} | {steps - 1})


@pytest.mark.parametrize("every, accumulate", [(1, 1), (3, 1), (1, 2), (4, 2)])
def test_loop_reads_once_per_check_interval_whatever_the_dbp_layers(tmp_path, every, accumulate):
    counts = {}
    for dbp_layers in (0, 1, 3):
        run, task = _run(tmp_path, 3, dbp_layers, every, accumulate)
        with HostReads() as reads:
            train_one_epoch(run, task, 1)
        assert run.state.step == 8  # 64 pairs / 8 per optimizer step
        counts[dbp_layers] = reads.from_modules("mae_dbp.train")
    # the loop's own reads: one per check point (8 optimizer steps: not per micro-batch)
    assert counts == {n: checks(8, every) for n in (0, 1, 3)}


def test_guard_acts_at_the_check_point_and_restores_last(tmp_path):
    # the pair with nan is in one batch of the epoch; checks every 4 steps: the guard restores at
    # the check point after it, the steps in between are lost, the rest of the epoch trains
    run, task = _run(tmp_path, 2, 1, 4, poison=5)
    start = {k: v.clone() for k, v in checkpoints.model_state(run.run_dir.last).items() if isinstance(v, torch.Tensor)}
    loss = train_one_epoch(run, task, 1)
    assert math.isfinite(loss) and len(run.guard.events) == 1
    event = run.guard.events[0]
    assert event["reason"] == "non-finite training loss" and event["step"] in (3, 7)
    weights = task.model.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values() if isinstance(v, torch.Tensor))
    if event["step"] == 7:  # the nan came in the second interval: restored, nothing after it
        for key, value in start.items():
            assert torch.equal(weights[key], value), key
    else:  # first interval: restored at step 3, then 4 good steps moved the weights away from last/
        assert not torch.equal(weights["0.0.weight"], start["0.0.weight"])
