"""Run by tests/test_shards.py under ``torchrun --nproc_per_node 2``: each rank builds the training
loader over shards as the training loop does (Accelerator(cpu=True), build_train_loader) and writes
the image indices it saw in each of two epochs to OUT/rank<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator

from mae_dbp.config import DataConfig
from mae_dbp.data.dataset import train_val_datasets
from mae_dbp.data.loader import build_train_loader


def main(shards: str, val_root: str, out: str) -> None:
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2, accelerator.num_processes
    data = DataConfig(shards=shards, val_root=val_root, mean=[32768.0], std=[16384.0], num_workers=1, crops_per_image=2)
    train, _ = train_val_datasets(data, channels=2, img_size=8)
    loader, images = build_train_loader(train, data, 4, accelerator, seed=0)
    seen = {}
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        seen[epoch] = [int(i) for (batch, _), index in loader for i in index]
    Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps(
        {"world": accelerator.num_processes, "images": images, "batches": len(loader), "seen": seen}))


if __name__ == "__main__":
    main(*sys.argv[1:])
