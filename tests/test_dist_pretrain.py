"""Two real CPU ranks (gloo, ``accelerate launch --multi_gpu --num_processes 2``): each rank its own
randomness, R bit-identical, and a resumed two-rank run continues exactly like an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mae_dbp.train import checkpoints
from mae_dbp.train.records import read_csv
from tests.conftest import accelerate_launch, tiny_pretrain, write_config

WORKER = Path(__file__).with_name("dist_pretrain_worker.py")
pytestmark = [pytest.mark.slow, pytest.mark.dist]


def launch(config: Path, run: Path, *extra: str) -> None:
    accelerate_launch(2, WORKER, config, run, *extra)


def probes(run: Path) -> list[dict]:
    found = [torch.load(run / f"probe_rank{rank}.pt") for rank in (0, 1)]
    assert [p["world_size"] for p in found] == [2, 2]  # two real ranks, not two world-size-1 processes
    return found


def rows(run: Path) -> list[dict]:
    return read_csv(run / "metrics.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data) -> dict[str, Path]:
    """A 3-epoch two-rank run, and the same run stopped after epoch 1 and resumed."""
    tmp = tmp_path_factory.mktemp("dist")
    config = tiny_pretrain(tiny_data, epochs=3)
    config.train.batch_size = 4  # 4 per rank x 2 ranks = the effective batch of 8
    config.data.num_workers = 1  # a DataLoader worker per rank, whose seeds the probe records
    config.log.plots = False
    straight = write_config(config, tmp / "straight.yaml")
    config.train.stop_after_epoch = 1
    split = write_config(config, tmp / "split.yaml")
    launch(straight, tmp / "straight")
    launch(split, tmp / "split")
    launch(split, tmp / "split", "--resume")
    return {"straight": tmp / "straight", "split": tmp / "split"}


def test_each_rank_draws_its_own_masks_and_worker_seeds_while_r_stays_identical(runs):
    rank0, rank1 = probes(runs["straight"])
    assert rank0["mask"].shape == rank1["mask"].shape
    assert not torch.equal(rank0["mask"], rank1["mask"])  # per-rank seeds: not the same mask noise
    assert (rank0["worker_seeds"] >= 0).all() and (rank1["worker_seeds"] >= 0).all()  # loaded in a worker
    assert rank0["worker_seeds"][0] != rank1["worker_seeds"][0]  # the workers' augmentation differs too
    assert rank0["R"].keys() == rank1["R"].keys() and len(rank0["R"]) == 5
    for name, r in rank0["R"].items():  # 3 epochs of R steps from different data on each rank
        assert not torch.equal(r, torch.eye(r.shape[0])), name
        assert torch.equal(r, rank1["R"][name]), name


def test_resumed_two_rank_run_continues_exactly(runs):
    straight, split = rows(runs["straight"]), rows(runs["split"])
    assert len(split) == len(straight) == 3
    for a, b in zip(straight, split):
        for key in ("step", "train_loss", "val_loss", "lr", "decor_lr", "decor_metric"):
            assert float(a[key]) == float(b[key]), (key, a, b)
    for rank, (a, b) in enumerate(zip(probes(runs["straight"]), probes(runs["split"]))):
        for name in a["R"]:
            assert torch.equal(a["R"][name], b["R"][name]), (rank, name)
    weights = [checkpoints.model_state(runs[name] / "last") for name in ("straight", "split")]
    for key, tensor in weights[0].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, weights[1][key]), key
    # every rank's RNG state is in the checkpoint
    assert {p.name for p in (runs["split"] / "last").glob("random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}


def test_muon_on_two_ranks_keeps_r_identical_and_trains(tmp_path, tiny_data):
    """The hybrid optimizer (Muon for matrices, AdamW for the rest) over DDP's averaged gradients:
    every rank applies the same update, so weights and R stay identical across the two ranks."""
    config = tiny_pretrain(tiny_data, epochs=2)
    config.train.batch_size, config.train.optimizer, config.log.plots = 4, "muon", False
    launch(write_config(config, tmp_path / "muon.yaml"), tmp_path / "muon")
    rank0, rank1 = probes(tmp_path / "muon")
    for name, r in rank0["R"].items():
        assert not torch.equal(r, torch.eye(r.shape[0])) and torch.equal(r, rank1["R"][name]), name
    metrics = rows(tmp_path / "muon")
    assert float(metrics[-1]["val_loss"]) < float(metrics[0]["val_loss"])
