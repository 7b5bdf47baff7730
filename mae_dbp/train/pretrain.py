"""MAE pretraining (BP or DBP): the config, data, the MAE task, and ``pretrain()``.

The encoder gets DBP on ``decor.sites`` (timm module-name globs, encoder only); the loop in
:mod:`mae_dbp.train.loop` does the training. Validation uses fixed masks (one seeded noise row per
validation image), so validation losses compare across runs and methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from mae_dbp import decor
from mae_dbp.config import DataConfig, DecorConfig, LogConfig, TrainConfig
from mae_dbp.data.dataset import train_val_datasets
from mae_dbp.data.transforms import channel_stats
from mae_dbp.models.mae import MAEConfig, MaskedAutoencoder, build_mae, fixed_noise
from mae_dbp.probe import EvalConfig, LinearProbe, best_probe
from mae_dbp.run_dir import RunDir
from mae_dbp.train import plots
from mae_dbp.train.decor_policy import DecorPolicy
from mae_dbp.train.loop import Task, WithIndex, fit
from mae_dbp.process import process_state
from mae_dbp.train.job import job_config, open_run


@dataclass
class PretrainLogConfig(LogConfig):
    recon_images: int = 6  # validation reconstructions plotted at the end


@dataclass
class PretrainConfig:
    """Everything a pretraining run reads (``mae-dbp pretrain --config FILE key=value ...``)."""

    model: MAEConfig = field(default_factory=MAEConfig)
    decor: DecorConfig = field(default_factory=DecorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: PretrainLogConfig = field(default_factory=PretrainLogConfig)


class MAETask(Task):
    def __init__(self, model: MaskedAutoencoder, val_size: int, val_seed: int, recon_images: int,
                 linear_probe: LinearProbe | None = None) -> None:
        self.model = model
        self.val_noise = fixed_noise(val_size, model.num_patches, seed=val_seed)
        self.recon_images = recon_images
        self.linear_probe = linear_probe

    def probe(self, run, epoch: int) -> dict:
        """``eval.probe`` on the main process at its epochs: the frozen encoder's probe score."""
        if self.linear_probe is None or not run.main or not self.linear_probe.due(epoch, run.train_cfg.epochs):
            return {}
        return self.linear_probe.run(run.accelerator.unwrap_model(run.model).encoder, run.accelerator.device)

    def summarize(self, rows: list[dict]) -> dict:
        return best_probe(rows)

    def no_weight_decay(self) -> set[str]:
        return self.model.no_weight_decay()

    def train_loss(self, model: nn.Module, batch) -> torch.Tensor:
        return model(batch[0])[0]

    def evaluate(self, model, loader, accelerator) -> dict[str, float]:
        """Mean over validation images of the masked-patch loss, each image with its fixed mask."""
        per_image = []
        for (images, _), index in loader:  # WithIndex: each image's fixed mask noise by its index
            noise = self.val_noise[index.cpu()].to(images.device)
            _, pred, mask = model(images, noise)
            target = accelerator.unwrap_model(model).target(images)
            loss = ((pred.float() - target.float()) ** 2).mean(-1)
            per_image.append(accelerator.gather_for_metrics((loss * mask).sum(1) / mask.sum(1)))
        return {"val_loss": float(torch.cat(per_image).mean())}

    def finish(self, run_dir: RunDir, model: nn.Module, val_set: Dataset, rows: list[dict]) -> None:
        """Grid of validation reconstructions (input / masked / reconstruction) of the best model, and
        the probe score against time where the run has probe scores."""
        if best_probe(rows):
            plots.probe_curves({run_dir.path.name: rows}, run_dir.probe_plot)
        count = min(self.recon_images, len(val_set))
        if count == 0:
            return
        model.eval()
        device = next(model.parameters()).device
        images = torch.stack([val_set[i][0][0] for i in range(count)]).to(device)
        with torch.no_grad():
            _, pred, mask = model(images, self.val_noise[:count].to(device))
            masked, recon = model.reconstruct(images, pred, mask)
        patch, side = model.patch_size, model.img_size // model.patch_size
        hidden = mask.reshape(-1, side, side).repeat_interleave(patch, 1).repeat_interleave(patch, 2).bool()
        plots.image_grid(
            {"input": images.cpu().numpy(), "masked": masked.cpu().numpy(), "reconstruction": recon.cpu().numpy()},
            run_dir.reconstructions_plot, hidden={"masked": hidden.cpu().numpy()},
            title=f"validation reconstructions (best checkpoint; blue: the {model.mask_ratio:.0%} of patches hidden from the encoder)",
        )


def build_model(config: PretrainConfig, start_weights: bool = False,
                say: Callable[[str], None] = print) -> tuple[MaskedAutoencoder, list[str]]:
    """The MAE, with DBP on the encoder's ``decor.sites`` when ``decor.enabled``. ``start_weights``:
    first load ``model.init_from`` where set (its one line to ``say``); DBP then starts at R = I, so
    the loaded function is unchanged. Without it (exports, benches) the weights stay random."""
    mae = build_mae(config.model)
    if start_weights and config.model.init_from:
        from mae_dbp.models.init_from import init_from

        say(init_from(mae, config.model.init_from))
    sites: list[str] = []
    if config.decor.enabled:
        sites = decor.apply(mae.encoder, list(config.decor.sites), **config.decor.layer_settings())
    return mae, sites


def pretrain(config: PretrainConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
             stem: str = "pretrain", clock: Callable[[], float] = time.perf_counter) -> dict:
    """Run MAE pretraining; returns the summary dict.

    ``resume`` continues a run directory (with ``config``, or else the run's own config.yaml);
    ``stem`` names a new run directory when neither ``out`` nor ``log.name`` is given; ``clock``
    (seconds) measures the training time (``time.process_time``: the process's CPU seconds).
    """
    config = job_config(PretrainConfig, config, resume)
    with open_run(config, out, resume, stem) as run_dir:
        torch.manual_seed(config.train.seed)
        main = process_state(config.train.device).is_main_process
        model, _ = build_model(config, start_weights=True, say=lambda line: print(line, flush=True) if main else None)
        train_set, val_set = train_val_datasets(config.data, model.in_chans, model.img_size)
        probe = None
        if config.eval.probe.folder:
            mean, std = channel_stats(config.data, model.in_chans)
            probe = LinearProbe(config.eval.probe, model.in_chans, model.img_size, mean, std)
            if main:  # only the main process probes: the others keep no copy of the probe's images
                probe.prepare()
        task = MAETask(model, len(val_set), config.data.val_seed, config.log.recon_images, probe)
        bad = sorted(set(train_set.bad_files) | set(val_set.bad_files))
        images = getattr(train_set, "images", len(train_set))  # a CropStream's length counts crops
        extra = {"bad_files": bad, "train_images": images, "val_images": len(val_set)}
        policy = DecorPolicy(model.encoder, config.decor)
        return fit(config, task, policy, train_set, WithIndex(val_set), run_dir,
                   resume=resume is not None, extra_summary=extra, clock=clock)
