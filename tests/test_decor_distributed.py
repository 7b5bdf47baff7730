"""Two real CPU processes (gloo) that see different data must hold bitwise-identical R, and that R is
the reference rule's (tests/conftest.py) on both ranks' rows joined: agreeing on a wrong R (e.g. rank
0's statistics broadcast instead of the sum) fails."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mae_dbp import decor
from tests.conftest import reference_step

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def _worker(rank: int, world_size: int, init_file: str, out_dir: str, sync: bool, variant: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        assert dist.get_world_size() == 2
        torch.manual_seed(0)  # same initial weights on both ranks
        model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 7 * 7, 5))
        # low_rank starts V at S's leading eigenvectors, so its steps are as large as full R's: smaller lr
        lr = 0.005 if variant == "low_rank" else 0.05
        decor.apply(model, ["0", "2"], kappa=0.5, lr=lr, variant=variant, rank=2)
        data = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for step in range(10):
            for _ in range(1 + step % 2):  # one or two micro-batches: their subsamples add up
                x = torch.randn(8, 3, 16, 16, generator=data) * (1 + rank)
                model.train()(x)
            if sync:
                decor.update(model)
            else:  # what would happen without the all-reduce: each rank steps on its own data
                for _, layer in decor.decor_modules(model):
                    layer.apply_update(layer.take_stats())
        # the trainer's once-per-epoch guard: it must raise exactly when the ranks' R differ
        from mae_dbp.config import DecorConfig
        from mae_dbp.train.decor_policy import DecorPolicy

        try:
            DecorPolicy(model, DecorConfig()).check_ranks(epoch=3, world_size=2)
            guard = None
        except RuntimeError as error:
            guard = str(error)
        state = {name: layer.R for name, layer in decor.decor_modules(model)}
        torch.save({**state, "agree": decor.ranks_agree(model), "guard": guard}, f"{out_dir}/r{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(tmp_path, sync: bool, variant: str = "gain") -> tuple[dict, dict]:
    mp.spawn(_worker, args=(2, str(tmp_path / f"init{sync}{variant}"), str(tmp_path), sync, variant), nprocs=2,
             join=True)
    r0, r1 = torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")
    return ({k: r0.pop(k) for k in ("agree", "guard")}, {k: r1.pop(k) for k in ("agree", "guard")}), (r0, r1)


@pytest.mark.parametrize("variant", ["gain", "low_rank"])
def test_two_ranks_hold_identical_r(tmp_path, variant):
    checks, (r0, r1) = _run(tmp_path, sync=True, variant=variant)
    assert r0.keys() == r1.keys() == {"0", "2"}
    for name in r0:
        assert not torch.equal(r0[name], torch.eye(r0[name].shape[0])) and r0[name].isfinite().all()
        assert torch.equal(r0[name], r1[name]), name
    assert checks == ({"agree": True, "guard": None},) * 2
    # without the all-reduce the ranks drift apart: the comparison above could fail, and the
    # trainer's guard (DecorPolicy.check_ranks -> decor.ranks_agree) raises on both ranks
    checks, (u0, u1) = _run(tmp_path, sync=False, variant=variant)
    assert not torch.equal(u0["0"], u1["0"])
    for check in checks:
        assert check["agree"] is False
        assert check["guard"] == "epoch 3: the decorrelation matrices differ between processes"


def _reference_worker(rank: int, world_size: int, init_file: str, out_dir: str, variant: str) -> None:
    """float64, every row kept (sample_frac=1): R after each step, and each rank's layer inputs."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)).double()
        decor.apply(model, ["0", "2"], kappa=0.5, lr=0.05, variant=variant, sample_frac=1.0)
        data = torch.Generator().manual_seed(100 + rank)
        inputs, rs = [], []
        for step in range(3):
            step_inputs = []
            for _ in range(1 + step % 2):
                x = torch.randn(4, 2, 7, 7, generator=data, dtype=torch.float64) * (1 + 2 * rank) + rank
                with torch.no_grad():
                    hidden = model[1](model[0](x))
                step_inputs.append((x, hidden))
                model.train()(x)
            decor.update(model)
            inputs.append(step_inputs)
            rs.append({name: layer.R.clone() for name, layer in decor.decor_modules(model)})
        torch.save({"inputs": inputs, "r": rs}, f"{out_dir}/ref{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("variant", ["standard", "gain"])
def test_two_ranks_step_r_as_the_reference_does_on_both_ranks_rows_joined(tmp_path, variant):
    mp.spawn(_reference_worker, args=(2, str(tmp_path / "init"), str(tmp_path), variant), nprocs=2, join=True)
    runs = [torch.load(tmp_path / f"ref{rank}.pt") for rank in range(2)]
    d_conv, d_linear = 2 * 3 * 3, 3 * 3 * 3
    r_ref = {"0": torch.eye(d_conv, dtype=torch.float64), "2": torch.eye(d_linear, dtype=torch.float64)}
    for step in range(3):
        # the conv layer's rows are its input patches (F.unfold), the linear layer's its flat input;
        # R of step t is applied to the rows of step t, so rebuild the hidden rows under rank 0's R
        conv_rows = torch.cat([F.unfold(x, 3, stride=2).transpose(1, 2).reshape(-1, d_conv)
                               for run in runs for x, _ in run["inputs"][step]])
        linear_rows = torch.cat([hidden for run in runs for _, hidden in run["inputs"][step]])
        r_ref["0"] = reference_step(r_ref["0"], conv_rows, 0.5, 0.05, variant)[0]
        r_ref["2"] = reference_step(r_ref["2"], linear_rows, 0.5, 0.05, variant)[0]
        for name in ("0", "2"):
            assert torch.equal(runs[0]["r"][step][name], runs[1]["r"][step][name]), (step, name)
            torch.testing.assert_close(runs[0]["r"][step][name], r_ref[name], rtol=1e-9, atol=1e-10,
                                       msg=f"step {step}, layer {name}")
