"""``train.device`` and ``train.compile``: the accelerator's device, and a compiled run whose
checkpoints hold the plain model's keys."""

from __future__ import annotations

import pytest
import torch

from data_tools.synthetic import write_synthetic
from mae_dbp.config import load_config
from mae_dbp.errors import UserInputError
from mae_dbp.train import checkpoints
from mae_dbp.train.pretrain import PretrainConfig, build_model, pretrain
from mae_dbp.process import cpu_only
from tests.conftest import tiny_pretrain


def test_train_device_is_checked_and_decides_the_cpu_flag():
    with pytest.raises(UserInputError, match="train.device: expected one of auto, cpu, cuda, got 'gpu'"):
        load_config(PretrainConfig, None, ["train.device=gpu"])
    assert load_config(PretrainConfig, None, ["train.device=cpu", "train.compile=true"]).train.compile is True
    assert cpu_only("cpu") is True
    assert cpu_only("auto") is (not torch.cuda.is_available())
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="train.device: cuda, but torch sees no CUDA GPU"):
            cpu_only("cuda")


@pytest.mark.slow
def test_compiled_run_trains_and_checkpoints_the_plain_model(tmp_path):
    data = write_synthetic(tmp_path / "data", num=24, size=32, seed=0, progress=False)
    config = tiny_pretrain(data, epochs=1)
    config.decor.enabled = False  # BP compiles to one graph: the quickest compiled run (DBP: tools/gpu_check.sh)
    config.train.compile, config.log.plots = True, False
    summary = pretrain(config, out=tmp_path / "run")
    assert summary["epochs_done"] == 1
    state = checkpoints.model_state(tmp_path / "run" / "last")
    model, _ = build_model(config)
    assert set(state) == set(model.state_dict())  # no "_orig_mod." (compiled) or "module." (DDP) prefixes
    model.load_state_dict(state)


@pytest.mark.slow
def test_compiled_dbp_run_through_pretrain_updates_r_and_checkpoints_the_plain_model(tmp_path):
    """DBP under ``train.compile`` (inductor) through the trainer: the compiled forward keeps its
    subsample (folded into XᵀX in the graph), R moves, and the checkpoint holds the plain keys."""
    data = write_synthetic(tmp_path / "data", num=24, size=32, seed=0, progress=False)
    config = tiny_pretrain(data, epochs=1)
    config.train.compile, config.log.plots = True, False
    summary = pretrain(config, out=tmp_path / "run")
    assert summary["epochs_done"] == 1 and summary["decor_sites"] and summary["steps"] >= 2
    state = checkpoints.model_state(tmp_path / "run" / "last")
    model, _ = build_model(config)
    assert set(state) == set(model.state_dict())
    for site in summary["decor_sites"]:
        r = state[f"encoder.{site}.R"]
        assert r.isfinite().all() and not torch.equal(r, torch.eye(r.shape[0])), site
