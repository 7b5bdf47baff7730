"""Two real CPU processes (gloo) that see different data must hold bitwise-identical R."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mae_dbp import decor

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
        torch.save({name: layer.R for name, layer in decor.decor_modules(model)}, f"{out_dir}/r{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(tmp_path, sync: bool, variant: str = "gain") -> tuple[dict, dict]:
    mp.spawn(_worker, args=(2, str(tmp_path / f"init{sync}{variant}"), str(tmp_path), sync, variant), nprocs=2,
             join=True)
    return torch.load(tmp_path / "r0.pt"), torch.load(tmp_path / "r1.pt")


@pytest.mark.parametrize("variant", ["gain", "low_rank"])
def test_two_ranks_hold_identical_r(tmp_path, variant):
    r0, r1 = _run(tmp_path, sync=True, variant=variant)
    assert r0.keys() == r1.keys() == {"0", "2"}
    for name in r0:
        assert not torch.equal(r0[name], torch.eye(r0[name].shape[0])) and r0[name].isfinite().all()
        assert torch.equal(r0[name], r1[name]), name
    # control: without the all-reduce the ranks drift apart, so the check above can fail
    u0, u1 = _run(tmp_path, sync=False, variant=variant)
    assert not torch.equal(u0["0"], u1["0"])
