"""Shared test setup and helpers (plain functions, imported as ``from tests.conftest import ...``).

The ``cuda`` marker skips where no GPU is present (markers: pyproject.toml). Helpers: tiny configs
built as objects (the shipped configs are for real runs), free TCP ports for multi-process tests,
and the DBP rule written out as an independent reference.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from mae_dbp.train.classify import ClassifyConfig
    from mae_dbp.train.pretrain import PretrainConfig


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def needs(module: str) -> pytest.MarkDecorator:
    """Skip unless ``module`` is installed, without importing it (collection stays fast)."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module}")


# ---- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (torchrun / accelerate default to
    29500, which another job on the machine may hold)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(num_processes: int, *program: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``program`` (a script path or ``-m module`` and its arguments) on
    ``num_processes`` CPU processes (gloo when 2 or more), fp32, no dynamo, on a free port; asserts
    it exits 0 and returns the finished process (stdout / stderr as text)."""
    multi = ["--multi_gpu", "--main_process_port", str(free_port())] if num_processes > 1 else []
    command = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(num_processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *map(str, program)]
    root = Path(__file__).resolve().parents[1]  # this checkout first, as in the parent process
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), MPLBACKEND="Agg")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# ---- shared data and runs (session-scoped: read-only, copy before changing) -----------------------


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """40 synthetic 2-channel uint16 32 px wire-bond images (images/, masks/, classes.yaml), seed 0:
    the data set of every tiny MAE pretraining test."""
    from data_tools.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("tiny_data") / "wirebond", num=40, size=32, seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_dbp_run(tiny_data, tmp_path_factory) -> Path:
    """A finished 2-epoch tiny DBP pretraining run on ``tiny_data`` (plots off), trained through the
    command line with a scientific-notation and a ``no`` override: the run that the export and
    bad-input tests read."""
    from mae_dbp.cli import main

    root = tmp_path_factory.mktemp("tiny_dbp_run")
    config = tiny_pretrain(None, epochs=2)
    config.log.plots = False
    config_file = write_config(config, root / "tiny.yaml")
    assert main(["pretrain", "--config", str(config_file), "--out", str(root / "run"), f"data.root={tiny_data}",
                 "train.base_lr=4e-2", "train.mixed_precision=no"]) == 0
    return root / "run"


# ---- segmentation ------------------------------------------------------------------------------


def background_only_miou(masks: Path | str, ignore_index: int = 255) -> float:
    """The mIoU (%) of a segmenter that predicts background (class 0) everywhere, from the masks in
    ``masks`` (index PNGs): as mmseg's IoUMetric sums areas over the set, background's IoU is its
    share of the labelled pixels, every other class present scores 0, absent classes are left out."""
    import numpy as np
    from PIL import Image

    counts = np.zeros(256, np.int64)
    for path in sorted(Path(masks).glob("*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    counts[ignore_index] = 0
    assert counts.sum() > 0, f"no labelled pixels in {masks}"
    return 100.0 * float(counts[0]) / float(counts.sum()) / int(np.count_nonzero(counts))


# ---- tiny configs ---------------------------------------------------------------------------------


def tiny_pretrain(root: Path | str | None, epochs: int = 2) -> PretrainConfig:
    """A 2-block, 32-wide ViT MAE on 32 px 2-channel 16-bit images; 8 images per step."""
    from mae_dbp.config import DataConfig, DecorConfig, TrainConfig
    from mae_dbp.models.mae import DecoderConfig, MAEConfig
    from mae_dbp.train.pretrain import PretrainConfig, PretrainLogConfig

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
    from mae_dbp.config import DecorConfig, LogConfig
    from mae_dbp.models.zoo import ZooModelConfig
    from mae_dbp.train.classify import ClassifyConfig, ClassifyDataConfig, ClassifyTrainConfig

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
    from mae_dbp.config import save_config

    save_config(config, path)
    return path


# ---- R perturbation ---------------------------------------------------------------------------


def perturb_r(model: torch.nn.Module, scale: float, generator: torch.Generator | None = None) -> None:
    """R <- R + scale · N(0, 1) in every decorrelated layer of ``model`` (a non-trivial R, as after
    training), in place; draws from ``generator`` or torch's global RNG."""
    from mae_dbp import decor

    with torch.no_grad():
        for _, layer in decor.decor_modules(model):
            noise = torch.randn(layer.R.shape, generator=generator, dtype=layer.R.dtype).to(layer.R.device)
            layer.R.add_(scale * noise)
            layer.invalidate_cache()


# ---- the DBP rule, independent of the library -----------------------------------------------------


def correlated(n: int, d: int, seed: int = 0, strength: float = 0.9) -> torch.Tensor:
    """Rows with strongly correlated, unequal-variance features: (n, d) float64."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(d, dtype=torch.float64) + strength * torch.randn(d, d, generator=g, dtype=torch.float64)
    scales = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T) * scales


def reference_step(r, x, kappa, lr, variant, u=None, v=None):
    """The rule written out with explicit loops-free matrix algebra, independent of the library."""
    n, d = x.shape
    z = x @ r.T
    s = sum(torch.outer(z[i], z[i]) for i in range(n)) / n
    c = s - torch.diag(torch.diag(s))
    vmat = torch.diag(torch.diag(s) - 1.0)
    g = (1 - kappa) * c + kappa * vmat
    delta = g @ r
    if variant == "triangular":
        delta = delta * torch.tril(torch.ones(d, d, dtype=r.dtype))
    if variant == "low_rank":
        if not u.any():  # the first step starts V at the leading eigenvectors of S
            v = torch.linalg.eigh(s)[1][:, -v.shape[1]:]
        u_new = u - lr * delta @ v
        v_new = v - lr * delta.T @ u
        return torch.eye(d, dtype=r.dtype) + u_new @ v_new.T, u_new, v_new
    r_new = r - lr * delta
    if variant == "gain":
        z_new = x @ r_new.T
        r_new = r_new * torch.sqrt((x**2).sum(1).mean() / (z_new**2).sum(1).mean())
    return r_new, None, None
