"""Read an exported encoder folder (``mae-dbp export``) into a plain timm ``VisionTransformer``.

The folder holds ``config.json`` (timm hub format: ``architecture``, ``model_args``,
``pretrained_cfg`` with raw-unit ``mean``/``std``) and ``model.safetensors`` (timm's state dict of
the model built with ``num_classes=0``). Loading is strict: any missing, unexpected or mis-shaped
key is an error that lists them and names the file. No mmseg import here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mae_dbp.errors import UserInputError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_SHOW = 8  # keys listed per category in an error message


def read_export_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder, with ``architecture`` and ``model_args`` checked."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise UserInputError(f"{path} does not exist: {directory} is not an export folder "
                             f"(expected {CONFIG_FILE} + {WEIGHTS_FILE} written by `mae-dbp export`)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise UserInputError(f"{path}: missing the timm model name under key 'architecture'")
    if not isinstance(config.setdefault("model_args", {}), dict):
        raise UserInputError(f"{path}: 'model_args' must be a mapping of timm.create_model arguments")
    return config


def build_vit(architecture: str, model_args: dict[str, Any], **overrides: Any) -> torch.nn.Module:
    """A randomly initialised timm ViT without head; ``overrides`` (e.g. drop_path_rate) win over ``model_args``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    kwargs = {**model_args, **overrides, "num_classes": 0}
    try:
        model = timm.create_model(architecture, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as error:
        raise UserInputError(f"cannot build timm model {architecture!r} with {kwargs}: {error}") from error
    if not isinstance(model, VisionTransformer):
        raise UserInputError(f"{architecture!r} is a {type(model).__name__}, expected a timm VisionTransformer")
    return model


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW]) + (f", ... ({len(keys)} in all)" if len(keys) > _SHOW else "")
    return f"{title}: {shown}"


def load_state_strict(model: torch.nn.Module, weights: str | Path) -> None:
    """Load a safetensors file into ``model``; any key or shape mismatch raises, naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights)
    if not path.is_file():
        raise UserInputError(f"{path} does not exist (expected the exported encoder weights)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserInputError(f"{path}: not a readable safetensors file ({error})") from error
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = [_listing(t, keys) for t, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
    if problems:
        raise UserInputError(f"{path} does not match {type(model).__name__} built from its config.json: "
                             + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_export(directory: str | Path, **overrides: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the exported timm ViT and load its weights strictly. Returns ``(model, config)``.

    ``overrides`` go to ``timm.create_model`` and must not change parameter shapes
    (e.g. ``drop_path_rate``); the export's own ``img_size``/``in_chans`` are kept.
    """
    config = read_export_config(directory)
    model = build_vit(config["architecture"], config["model_args"], **overrides)
    load_state_strict(model, Path(directory) / WEIGHTS_FILE)
    return model, config


def export_norm_stats(directory: str | Path) -> tuple[list[float], list[float]] | None:
    """The export's ``pretrained_cfg`` mean/std (raw pixel units), or None if it has none."""
    cfg = read_export_config(directory).get("pretrained_cfg") or {}
    if "mean" in cfg and "std" in cfg:
        return [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    return None
