"""A pretraining run (as ``mae_dbp.train.pretrain.pretrain``) that also records, per rank, what the
two-rank tests compare: the first training step's mask, the seeds of the DataLoader workers, and
R of every layer at the end. Started by tests/test_dist_pretrain.py under
``accelerate launch --multi_gpu --num_processes 2`` (two gloo ranks on CPU).

    python tests/dist_pretrain_worker.py CONFIG.yaml RUN_DIR [--resume]

Writes RUN_DIR/probe_rank<r>.pt: {"world_size", "mask", "worker_seeds", "R": {layer: tensor}}.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset, get_worker_info

from mae_dbp import decor
from mae_dbp.config import load_config
from mae_dbp.data.dataset import train_val_datasets
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.loop import WithIndex, fit
from mae_dbp.train.pretrain import MAETask, PretrainConfig, build_model
from mae_dbp.process import process_state
from mae_dbp.train.job import job_config, open_run


class WorkerSeeds(Dataset):
    """``(image, seed of the DataLoader worker that loaded it)`` for a dataset of ``(image, label)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        info = get_worker_info()
        return self.dataset[index][0], torch.tensor(info.seed if info is not None else -1)


class RecordingTask(MAETask):
    """The MAE task, keeping the mask and the worker seeds of the first training step."""

    first: dict | None = None

    def train_loss(self, model, batch) -> torch.Tensor:
        loss, _, mask = model(batch[0])
        if self.first is None:
            self.first = {"mask": mask.detach().cpu(), "worker_seeds": batch[1].cpu()}
        return loss


def main(config_path: str, out: str, resume: bool) -> None:
    config = job_config(PretrainConfig, None if resume else load_config(PretrainConfig, config_path),
                        out if resume else None)
    with open_run(config, None if resume else out, out if resume else None, "dist") as run_dir:
        torch.manual_seed(config.train.seed)
        model, _ = build_model(config)
        train_set, val_set = train_val_datasets(config.data, model.in_chans, model.img_size)
        task = RecordingTask(model, len(val_set), config.data.val_seed, config.log.recon_images)
        fit(config, task, DecorPolicy(model.encoder, config.decor), WorkerSeeds(train_set), WithIndex(val_set),
            run_dir, resume=resume)
    state = process_state()
    probe = {"world_size": state.num_processes, **(task.first or {}),
             "R": {name: layer.R.clone() for name, layer in decor.decor_modules(model.encoder)}}
    torch.save(probe, Path(out) / f"probe_rank{state.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv[3:])
