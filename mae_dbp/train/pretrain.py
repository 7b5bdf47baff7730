"""MAE pretraining (BP or DBP): config defaults, data, the MAE task, and ``pretrain()``.

The encoder gets DBP on ``decor.sites`` (timm module-name globs, encoder only); the loop in
:mod:`mae_dbp.train.loop` does the training. Validation uses fixed masks (one seeded noise row per
validation image), so validation losses compare across runs and methods.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mae_dbp import decor
from mae_dbp.config import load_config, save_config
from mae_dbp.data.dataset import ImageFolderDataset, train_val_datasets
from mae_dbp.data.transforms import build_transform
from mae_dbp.errors import UserInputError
from mae_dbp.models.mae import MaskedAutoencoder, build_mae, fixed_noise
from mae_dbp.train import plots
from mae_dbp.train.loop import Task, fit, process_state
from mae_dbp.train.schedules import DECOR_SCHEDULES

DEFAULT_SITES = ["patch_embed.proj", "blocks.*.attn.qkv", "blocks.*.mlp.fc1"]

DEFAULTS: dict[str, Any] = {
    "model": {
        "encoder": "vit_base_patch16_224", "img_size": 224, "in_chans": 3,
        "encoder_args": {},  # free-form timm kwargs, e.g. embed_dim, depth, num_heads, patch_size
        "decoder": {"dim": 512, "depth": 2, "heads": 16, "mlp_ratio": 4.0},
        "mask_ratio": 0.75, "norm_pix_loss": False,
    },
    "decor": {
        "enabled": True, "sites": DEFAULT_SITES, "kappa": 0.0, "lr": 5e-4, "sample_frac": 0.1,
        "variant": "standard", "rank": 16, "lr_schedule": "constant", "seed": 0,
    },
    "data": {
        "root": None, "val_root": None, "val_fraction": 0.05, "val_seed": 0,
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],  # raw pixel units
        "stats": None,  # a data-tools stats.json (raw units); overrides mean/std
        "skip_bad": False, "num_workers": 0, "crop_scale": [0.2, 1.0],
    },
    "train": {
        "epochs": 10, "batch_size": 64, "effective_batch": 64, "base_lr": 1.5e-4, "min_lr": 0.0,
        "warmup_epochs": 1, "weight_decay": 0.05, "betas": [0.9, 0.95], "grad_clip": None,
        "mixed_precision": "no", "seed": 0, "max_train_seconds": None, "stop_after_epoch": None,
        "guard": {"enabled": True, "tolerance": 0.1, "patience": 2, "lr_factor": 0.5,
                  "max_restores": 3, "min_scale": 0.01},
    },
    "log": {"dir": "runs", "name": None, "log_with": None, "project": "mae-dbp", "country": "NLD",
            "emissions": True, "plots": True, "recon_images": 6},
}


class IndexedDataset(Dataset):
    """(image, index) pairs, so validation can look up each image's fixed mask noise."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index][0], index


class MAETask(Task):
    def __init__(self, model: MaskedAutoencoder, val_size: int, val_seed: int, recon_images: int) -> None:
        self.model, self.decor_root = model, model.encoder
        self.val_noise = fixed_noise(val_size, model.num_patches, seed=val_seed)
        self.recon_images = recon_images

    def no_weight_decay(self) -> set[str]:
        return self.model.no_weight_decay()

    def train_loss(self, model: nn.Module, batch) -> torch.Tensor:
        return model(batch[0])[0]

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Mean over validation images of the masked-patch loss, each image with its fixed mask."""
        per_image = []
        for images, index in loader:
            noise = self.val_noise[index.cpu()].to(images.device)
            _, pred, mask = model(images, noise)
            target = accelerator.unwrap_model(model).target(images)
            loss = ((pred.float() - target.float()) ** 2).mean(-1)
            per_image.append(accelerator.gather_for_metrics((loss * mask).sum(1) / mask.sum(1)))
        return {"val_loss": float(torch.cat(per_image).mean())}

    def finish(self, run_dir: Path, model: nn.Module, val_set: Dataset) -> None:
        """Grid of validation reconstructions (input / masked / reconstruction) of the best model."""
        count = min(self.recon_images, len(val_set))
        if count == 0:
            return
        model.eval()
        device = next(model.parameters()).device
        images = torch.stack([val_set[i][0] for i in range(count)]).to(device)
        with torch.no_grad():
            _, pred, mask = model(images, self.val_noise[:count].to(device))
            masked, recon = model.reconstruct(images, pred, mask)
        plots.image_grid(
            {"input": images.cpu().numpy(), "masked": masked.cpu().numpy(), "reconstruction": recon.cpu().numpy()},
            run_dir / "reconstructions.png", title="validation reconstructions (best checkpoint)",
        )


def normalisation(data_cfg: dict, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in raw pixel units, from data.stats (a stats.json) or data.mean/std."""
    if data_cfg["stats"]:
        path = Path(data_cfg["stats"])
        if not path.is_file():
            raise UserInputError(f"data.stats file {path} does not exist")
        stats = json.loads(path.read_text())
        mean, std = stats.get("mean"), stats.get("std")
        if mean is None or std is None:
            raise UserInputError(f"{path}: expected keys 'mean' and 'std'")
    else:
        mean, std = data_cfg["mean"], data_cfg["std"]
    mean = [float(mean)] * channels if isinstance(mean, (int, float)) else [float(m) for m in mean]
    std = [float(std)] * channels if isinstance(std, (int, float)) else [float(s) for s in std]
    return mean, std


def build_datasets(config: dict) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """Train and validation image datasets: data.val_root, or a seeded data.val_fraction of data.root."""
    data, model = config["data"], config["model"]
    if not data["root"]:
        raise UserInputError("config key data.root is not set (a folder of images)")
    channels, size = model["in_chans"], model["img_size"]
    mean, std = normalisation(data, channels)
    train_tf = build_transform(True, size, mean, std, channels=channels, scale=tuple(data["crop_scale"]))
    val_tf = build_transform(False, size, mean, std, channels=channels)
    return train_val_datasets(data, channels, train_tf, val_tf)


def build_model(config: dict) -> tuple[MaskedAutoencoder, list[str]]:
    """The MAE, with DBP on the encoder's ``decor.sites`` when ``decor.enabled``."""
    mae = build_mae(config["model"])
    cfg = config["decor"]
    if cfg["lr_schedule"] not in DECOR_SCHEDULES:
        raise UserInputError(f"decor.lr_schedule must be one of {', '.join(DECOR_SCHEDULES)}, got {cfg['lr_schedule']!r}")
    sites: list[str] = []
    if cfg["enabled"]:
        settings = {k: cfg[k] for k in ("kappa", "lr", "sample_frac", "variant", "rank", "seed")}
        sites = decor.apply(mae.encoder, cfg["sites"], **settings)
    return mae, sites


def resolve_run_dir(config: dict, out: str | Path | None, config_path: str | Path | None) -> Path:
    """``--out`` or ``log.dir/log.name`` (default: config stem + time). Never reuses a started run.

    Decided on the main process and shared with the others, so all ranks agree on one folder.
    """
    from accelerate.utils import broadcast_object_list

    state = process_state()
    answer = [None, None]
    if state.is_main_process:
        if out is None:
            stem = Path(config_path).stem if config_path else "pretrain"
            out = Path(config["log"]["dir"]) / (config["log"]["name"] or f"{stem}-{datetime.now():%Y%m%d-%H%M%S}")
        out = Path(out)
        taken = (out / "metrics.csv").exists() or (out / "summary.json").exists()  # >= 1 epoch done
        answer = [str(out), f"run directory {out} already holds a run: use --resume {out} or another --out" if taken else None]
    if state.num_processes > 1:
        broadcast_object_list(answer)
    if answer[1]:
        raise FileExistsError(answer[1])
    return Path(answer[0])


def pretrain(config_path: str | Path | None = None, overrides: list[str] = (), out: str | Path | None = None,
             resume: str | Path | None = None) -> dict:
    """Run MAE pretraining; returns the summary dict. ``resume`` continues a run directory."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "last.pt").is_file():
            raise UserInputError(f"--resume {run_dir}: no last.pt there (not a started run directory)")
        config = load_config(DEFAULTS, run_dir / "config.yaml", overrides)
    else:
        config = load_config(DEFAULTS, config_path, overrides)
        run_dir = resolve_run_dir(config, out, config_path)
    torch.manual_seed(config["train"]["seed"])
    train_set, val_set = build_datasets(config)
    model, sites = build_model(config)
    if process_state().is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    task = MAETask(model, len(val_set), config["data"]["val_seed"], config["log"]["recon_images"])
    bad = sorted(set(train_set.bad_files) | set(val_set.bad_files))
    extra = {"bad_files": bad, "train_images": len(train_set), "val_images": len(val_set), "config": str(config_path or "")}
    return fit(config, task, IndexedDataset(train_set), IndexedDataset(val_set), run_dir, resume=resume is not None,
               extra_summary=extra)
