"""Helpers that segmentation configs call while they are evaluated (no mmseg import).

mmengine treats a config that imports a non-stdlib module as a "lazy import" config, so our
configs reach these through the standard library::

    import importlib
    _settings = importlib.import_module('segmentation.settings')
    mean = _settings.norm_stats(train_dir, pretrained_export)['mean']
"""

from __future__ import annotations

from pathlib import Path

from mae_dbp.data.io import STATS_FILE, read_classes, read_stats
from mae_dbp.errors import UserInputError


def norm_stats(data_root: str | Path, export_dir: str | Path | None = None) -> dict[str, list[float]]:
    """Per-channel ``{'mean': [...], 'std': [...]}`` in raw pixel units (e.g. 0..65535 for 16-bit).

    From ``data_root/stats.json`` (the data tools' statistics); if that file is absent, from the
    export's ``config.json`` (the pretraining statistics); otherwise an error naming both.
    """
    stats = read_stats(data_root)
    if stats is not None:
        return {"mean": stats["mean"], "std": stats["std"]}
    if export_dir:
        from segmentation.export_reader import export_norm_stats

        found = export_norm_stats(export_dir)
        if found is not None:
            return {"mean": found[0], "std": found[1]}
    where = f" nor mean/std in {Path(export_dir) / 'config.json'}" if export_dir else ""
    raise UserInputError(f"{Path(data_root) / STATS_FILE} does not exist{where}: compute the statistics "
                         "with the data tools, or set mean=[...] std=[...] (one per channel) with --cfg-options")


def class_names(data_root: str | Path) -> tuple[str, ...]:
    """The class names listed in ``data_root/classes.yaml``."""
    return tuple(read_classes(data_root)["classes"])



def encoder_shape(export_dir: str | Path | None, arch: str | None = None,
                  model_args: dict | None = None) -> dict[str, int]:
    """``{'embed_dim', 'depth', 'in_chans', 'patch_size'}`` of the export's ViT (or of ``arch`` +
    ``model_args`` when ``export_dir`` is None), so configs size the neck and heads to match.

    The model is instantiated on the meta device: no memory, no weights read.
    """
    import torch

    from segmentation.export_reader import build_vit, read_export_config

    if export_dir:
        config = read_export_config(export_dir)
        arch, model_args = config["architecture"], config["model_args"]
    if not arch:
        raise UserInputError("set pretrained_export (an export folder) or the scratch architecture")
    with torch.device("meta"):
        vit = build_vit(arch, dict(model_args or {}))
    return {"embed_dim": int(vit.embed_dim), "depth": len(vit.blocks),
            "in_chans": int(vit.patch_embed.proj.in_channels), "patch_size": int(vit.patch_embed.patch_size[0])}
