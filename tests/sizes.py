"""Test-only sizes: tiny configs built as objects (the shipped configs are for real runs)."""

from __future__ import annotations

from pathlib import Path

from mae_dbp.config import DataConfig, DecorConfig, LogConfig, TrainConfig, save_config
from mae_dbp.models.mae import DecoderConfig, MAEConfig
from mae_dbp.models.zoo import ZooModelConfig
from mae_dbp.quickstart import QuickstartSize
from mae_dbp.train.classify import ClassifyConfig, ClassifyDataConfig, ClassifyTrainConfig
from mae_dbp.train.pretrain import PretrainConfig, PretrainLogConfig


def tiny_pretrain(root: Path | str | None, epochs: int = 2) -> PretrainConfig:
    """A 2-block, 32-wide ViT MAE on 32 px 2-channel 16-bit images; 8 images per step."""
    return PretrainConfig(
        model=MAEConfig(encoder="vit_tiny_patch16_224", img_size=32, in_chans=2,
                        encoder_args={"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
                        decoder=DecoderConfig(dim=32, depth=1, heads=2)),
        decor=DecorConfig(lr=0.005),
        data=DataConfig(root=str(root) if root else None, mean=[32768.0] * 2, std=[16384.0] * 2, val_fraction=0.2),
        train=TrainConfig(epochs=epochs, batch_size=8, effective_batch=8, base_lr=0.04, warmup_epochs=0),
        log=PretrainLogConfig(emissions=False, recon_images=2),
    )


def tiny_classify(train_root: Path | str, val_root: Path | str | None, arch: str = "convnet",
                  epochs: int = 4) -> ClassifyConfig:
    """A small ConvNet / MLP on 16 px grey images, 16 per step, constant-ish lr."""
    return ClassifyConfig(
        model=ZooModelConfig(arch=arch, in_chans=1, img_size=16, conv_channels=[8, 16], mlp_hidden=[64, 64]),
        decor=DecorConfig(sites=["*"], lr=0.002),
        data=ClassifyDataConfig(root=str(train_root), val_root=str(val_root) if val_root else None,
                                mean=[128.0], std=[64.0], cache=True),
        train=ClassifyTrainConfig(epochs=epochs, batch_size=16, effective_batch=16, base_lr=0.032, min_lr=0.002,
                                  warmup_epochs=0, weight_decay=0.0, target_accuracy=0.9),
        log=LogConfig(emissions=False),
    )


def write_config(config, path: Path) -> Path:
    """``config`` as a YAML file, for command-line tests (``--config path``)."""
    save_config(config, path)
    return path


# the quickstart end to end in about a minute
TEST_SIZE = QuickstartSize(pretrain_images=48, photo_train_crops=64, photo_val_crops=16, seeds=(0, 1),
                           seg_train_images=12, seg_val_images=6, image_size=32, pretrain_seconds=4.0,
                           pretrain_epochs=2, seg_iters=4)
