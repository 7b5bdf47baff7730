"""Export a pretrained encoder as a plain timm ViT: R fused into the weights (W <- W R).

Output folder (timm's hub layout, so ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=".../model.safetensors"), num_classes=0, **model_args)`` or
``timm.create_model("local-dir:FOLDER")`` loads it with strict keys):

    model.safetensors   the fused encoder's state_dict (timm key names, no DBP trace)
    config.json         architecture, model_args, pretrained_cfg (input size, mean/std in raw
                        pixel units), and a ``mae_dbp`` block (source, fused sites, check result)
    mmseg_backbone.pth  (format mmseg/both) {"state_dict": {...}} in the key layout of mmseg's own
                        ``MAE`` backbone (``layers.i.ln1``, ``ffn.layers.0.0``, ...), for stock
                        mmseg configs: ``backbone=dict(type="MAE", ..., norm_cfg=dict(type="LN",
                        eps=1e-6), init_cfg=dict(type="Pretrained", checkpoint=".../mmseg_backbone.pth"))``
                        (timm's LayerNorm eps is 1e-6, mmseg's default 1e-5)

Before writing, the fused encoder's features are compared with the unfused DBP encoder's on a
random batch; an export whose max abs difference exceeds ``tolerance`` is refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from mae_dbp import decor
from mae_dbp.config import to_dict
from mae_dbp.data.transforms import channel_stats
from mae_dbp.models.mae import MAEConfig
from mae_dbp.errors import UserInputError
from mae_dbp.files import atomic_write_all, json_writer
from mae_dbp.run_dir import RunDir, prepare_output
from mae_dbp.train import checkpoints

FORMATS = ("timm", "mmseg", "both")

# timm VisionTransformer key fragment -> mmseg MAE backbone key fragment
_MMSEG_RENAMES = (
    ("patch_embed.proj.", "patch_embed.projection."), ("blocks.", "layers."), (".norm1.", ".ln1."),
    (".norm2.", ".ln2."), (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1."),
    (".ls1.gamma", ".gamma_1"), (".ls2.gamma", ".gamma_2"),
)


def keep_until_written(out: Path, names: list[str], force: bool) -> None:
    """The output rule (:func:`~mae_dbp.run_dir.prepare_output`), except that ``--force`` keeps the
    previous export until the new files are written (they replace it atomically)."""
    if force:
        out.mkdir(parents=True, exist_ok=True)
    else:
        prepare_output(out, names, force)


def locate_checkpoint(source: str | Path) -> tuple[Path, RunDir]:
    """(checkpoint folder, its run directory) for a run directory (its ``best/``, else ``last/``,
    which the caller reports), a checkpoint folder in one, or that folder's model file."""
    source = Path(source)
    if source.is_file():
        source = source.parent
    if (source / checkpoints.MODEL_FILE).is_file():
        checkpoint, run = source, RunDir(source.parent)
    else:
        run = RunDir(source)
        checkpoint = run.checkpoint()
    if not run.config.is_file():
        raise UserInputError(f"{run.config} not found: export needs the run directory's config.yaml beside the checkpoint")
    checkpoints.verify(checkpoint)
    return checkpoint, run


def fusion_batch(in_chans: int, img_size: int, seed: int = 0) -> torch.Tensor:
    """The seeded random images (2, in_chans, img_size, img_size), float32, a fused model is checked on."""
    return torch.randn(2, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(seed))


def check_fusion(model: nn.Module, fused: nn.Module, images: torch.Tensor, method: str = "forward") -> float:
    """Max abs difference of ``method`` (``forward``, ``forward_features``) on ``images`` between the
    DBP ``model``, computed unfused as W (R x) (:func:`mae_dbp.decor.explicit`), and ``fused``."""
    model.eval()
    fused.eval()
    with torch.no_grad(), decor.explicit(model):
        return float((getattr(model, method)(images) - getattr(fused, method)(images)).abs().max())


def timm_config(model: MAEConfig, encoder: nn.Module, mean: list[float], std: list[float], extra: dict) -> dict:
    """config.json in timm's hub format for ``encoder``, built from the ``model`` section."""
    size, channels = int(encoder.patch_embed.img_size[0]), int(encoder.patch_embed.proj.in_channels)
    return {
        "architecture": model.encoder,
        "num_classes": 0,
        "num_features": int(encoder.num_features),
        "global_pool": encoder.global_pool,
        "model_args": {"img_size": size, "in_chans": channels, **dict(model.encoder_args)},
        "pretrained_cfg": {
            "input_size": [channels, size, size], "mean": mean, "std": std, "num_classes": 0,
            "interpolation": "bicubic", "crop_pct": 1.0, "first_conv": "patch_embed.proj",
        },
        "mae_dbp": extra,
    }


def mmseg_mae_state_dict(state: dict[str, torch.Tensor], embed_dim: int) -> dict[str, torch.Tensor]:
    """A timm ViT state_dict renamed for mmseg's ``MAE`` backbone (final ``norm`` -> ``ln1``).

    Layer scales are 1 where timm has none (mmseg's MAE always has ``gamma_1/2``); mmseg's relative
    position bias tables are left out (mmseg initialises them to zero: no bias, as in timm).
    """
    out = {}
    for key, value in state.items():
        new = "ln1." + key[len("norm."):] if key.startswith("norm.") else key
        for old, replacement in _MMSEG_RENAMES:
            new = new.replace(old, replacement)
        if new.split(".")[0] not in ("cls_token", "pos_embed", "patch_embed", "layers", "ln1"):
            raise UserInputError(f"cannot map timm key {key!r} to mmseg's MAE backbone")
        out[new] = value
    blocks = {k.split(".")[1] for k in out if k.startswith("layers.")}
    for i in blocks:
        for gamma in ("gamma_1", "gamma_2"):
            out.setdefault(f"layers.{i}.{gamma}", torch.ones(embed_dim))
    return out


def export_encoder(source: str | Path, out: str | Path, fmt: str = "timm", force: bool = False,
                   tolerance: float = 1e-4) -> dict:
    """Fuse and export the MAE encoder of a pretraining run; returns what config.json holds."""
    from mae_dbp.train.pretrain import PretrainConfig, build_model

    if fmt not in FORMATS:
        raise UserInputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    checkpoint_path, run = locate_checkpoint(source)
    if run.job() != "pretrain":
        raise UserInputError(f"{source}: a classification run, not MAE pretraining (export it with export_classifier)")
    config = run.read_config(PretrainConfig)
    out = Path(out)
    names = ["model.safetensors", "config.json"] + (["mmseg_backbone.pth"] if fmt != "timm" else [])
    keep_until_written(out, names, force)
    mae, sites = build_model(config)
    checkpoints.check_fits(mae, checkpoint_path, str(run.config), f"was {run.config} edited after training?")
    missing, unexpected = mae.load_state_dict(checkpoints.model_state(checkpoint_path), strict=False)
    if missing or unexpected:
        raise UserInputError(f"{checkpoint_path}: does not match {run.config} "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    encoder = mae.encoder.float()
    fused = decor.fuse(copy.deepcopy(encoder))
    diff = check_fusion(encoder, fused, fusion_batch(mae.in_chans, mae.img_size), "forward_features")
    if not diff <= tolerance:
        raise RuntimeError(f"fused encoder differs from the DBP encoder by {diff:.3g} > {tolerance}: export refused")
    state = {k: v.detach().contiguous() for k, v in fused.state_dict().items()}
    mean, std = channel_stats(config.data, mae.in_chans)
    loop = checkpoints.loop_state(checkpoint_path)
    extra = {"source": str(checkpoint_path), "fused_sites": sites, "fusion_max_abs_diff": diff,
             "epoch": loop.get("epoch"), "val_loss": loop.get("best_val")}
    meta = timm_config(config.model, fused, mean, std, extra)
    writers = {out / "model.safetensors": lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}),
               out / "config.json": json_writer(meta)}
    if fmt != "timm":
        mmseg_state = {"state_dict": mmseg_mae_state_dict(state, int(fused.embed_dim)), "meta": {"mae_dbp": extra}}
        writers[out / "mmseg_backbone.pth"] = lambda tmp: torch.save(mmseg_state, tmp)
    atomic_write_all(writers)  # all or nothing: a failed write leaves the previous export
    return meta


def run_kind(source: str | Path) -> str:
    """``classify`` for a classification run, else ``pretrain`` (:meth:`RunDir.job`)."""
    return locate_checkpoint(source)[1].job()


def export_classifier(source: str | Path, out: str | Path, force: bool = False, tolerance: float = 1e-4) -> dict:
    """Fuse R into a classify run's weights and write a plain model; returns what config.json holds.

    ``model.safetensors``: the fused state dict (resnet18 loads strictly into
    ``timm.create_model("resnet18", num_classes=N, in_chans=C)``); ``config.json``: arch,
    num_classes, in_chans, img_size, mean / std in raw pixel units, classes, the model section.
    The fused logits must equal the decorrelated model's, computed unfused as W (R x), on a seeded
    batch (2, C, S, S) (:func:`check_fusion`).
    """
    from mae_dbp.models.zoo import build_classifier, input_size
    from mae_dbp.train.classify import ClassifyConfig

    checkpoint_path, run = locate_checkpoint(source)
    config, out = run.read_config(ClassifyConfig), Path(out)
    if config.model.num_classes is None:
        raise UserInputError(f"{run.config}: model.num_classes is not set (not the config of a trained classify run)")
    keep_until_written(out, ["model.safetensors", "config.json"], force)
    model = build_classifier(config.model, config.decor)
    checkpoints.check_fits(model, checkpoint_path, str(run.config), f"was {run.config} edited after training?")
    model.load_state_dict(checkpoints.model_state(checkpoint_path))
    channels, size, _ = input_size(config.model)
    fused = decor.fuse(copy.deepcopy(model))
    diff = check_fusion(model, fused, fusion_batch(channels, size))
    if not diff <= tolerance:
        raise RuntimeError(f"fused model differs from the decorrelated one: max |logit diff| = {diff:.3g} > {tolerance:g}")
    state = {k: v.detach().cpu().contiguous() for k, v in fused.state_dict().items()}
    mean, std = channel_stats(config.data, channels)
    meta = {
        "arch": config.model.arch, "num_classes": config.model.num_classes, "in_chans": channels, "img_size": size,
        "mean": mean, "std": std, "pixel_units": "raw (as stored in the image files)",
        "classes": json.loads(run.classes.read_text()) if run.classes.is_file() else None,
        "model": to_dict(config.model), "fused_max_abs_diff": diff, "source": str(checkpoint_path),
    }
    atomic_write_all({out / "model.safetensors": lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}),
                      out / "config.json": json_writer(meta)})
    return meta
