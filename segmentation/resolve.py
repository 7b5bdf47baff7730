"""Fill the sizes a segmentation config leaves ``None`` from the data and the encoder; check the rest.

Configs stay literal (mmengine evaluates them before any ``--cfg-options`` merge), so what depends
on the data or the pretrained encoder is resolved here, on the merged config, right before the
Runner builds anything (:class:`segmentation.seg_runner.SegRunner` calls :func:`resolve`):

- top-level ``data_root`` -> every dataset whose ``data_root`` is None; top-level
  ``pretrained_export`` -> ``model.backbone.export_dir`` when None (the export's ``config.json``
  then fixes the architecture, so the random-init ``arch``/``model_args`` are dropped);
- the encoder's width / depth (the export's ``config.json``, or ``arch`` + ``model_args``) ->
  ``neck.embed_dim``, the heads' ``in_channels``, ``paramwise_cfg.num_layers``; the last four
  blocks -> ``backbone.out_indices``;
- the training split's ``classes.yaml`` (or the dataset class's own classes) -> the heads'
  ``num_classes``; a ``class_weight`` must have one entry per class;
- ``{train split}/stats.json``, else the export's pretraining mean/std -> the data preprocessor;
- a scheduler ``end`` of None -> ``train_cfg.max_iters``; ends beyond it are clipped.

A value the config states is checked instead of filled: a disagreement is one
:class:`~mae_dbp.errors.UserInputError` naming the config key and the file. No mmseg import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mae_dbp.data.io import CLASSES_FILE, STATS_FILE, read_classes, read_stats
from mae_dbp.errors import UserInputError
from segmentation.export_reader import CONFIG_FILE, build_vit, export_norm_stats, read_export_config

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def fill(node: dict, key: str, value: Any, where: str, source: str) -> None:
    """``node[key] = value`` if unset (None); otherwise it must equal ``value`` (lists == tuples)."""
    current = node.get(key)
    if current is None:
        node[key] = value
        return
    norm = (lambda v: [norm(x) for x in v] if isinstance(v, (list, tuple)) else v)
    if norm(current) != norm(value):
        raise UserInputError(f"{where}={current!r} in the config but {source} gives {value!r}; "
                             f"fix the config (or leave {where} None to take it from there)")


def apply_inputs(cfg) -> None:
    """Top-level ``data_root`` / ``pretrained_export`` into the datasets / backbone that leave them None."""
    data_root = cfg.get("data_root")
    for loader in LOADERS:
        dataset = (cfg.get(loader) or {}).get("dataset")
        if dataset is not None and dataset.get("data_root") is None and data_root is not None:
            dataset["data_root"] = str(data_root)
    backbone = cfg.model.backbone
    export = cfg.get("pretrained_export")
    if export and not backbone.get("export_dir"):
        backbone["export_dir"] = str(export)
        backbone.pop("arch", None)
        backbone.pop("model_args", None)


def encoder_shape(backbone: dict) -> tuple[dict[str, int], str]:
    """``({'embed_dim', 'depth', 'in_chans'}, source)`` of the backbone's ViT, built on the meta device."""
    import torch

    export = backbone.get("export_dir")
    if export:
        config = read_export_config(export)
        arch, model_args, source = config["architecture"], config["model_args"], str(Path(export) / CONFIG_FILE)
    elif backbone.get("arch"):
        arch, model_args = backbone["arch"], dict(backbone.get("model_args") or {})
        source = f"model.backbone.arch={arch!r}"
    else:
        raise UserInputError("set pretrained_export (an `mae-dbp export` folder) or model.backbone.arch "
                             "(a timm ViT name, random init)")
    with torch.device("meta"):
        vit = build_vit(arch, dict(model_args))
    shape = {"embed_dim": int(vit.embed_dim), "depth": len(vit.blocks),
             "in_chans": int(vit.patch_embed.proj.in_channels)}
    return shape, source


def resolve_encoder_sizes(cfg) -> dict[str, int]:
    """Neck / head widths, layer-decay depth and default out_indices from the encoder."""
    model = cfg.model
    shape, source = encoder_shape(model.backbone)
    dim, depth = shape["embed_dim"], shape["depth"]
    if model.backbone.get("out_indices") is None:  # a stated choice is checked by the backbone itself
        model.backbone.out_indices = tuple(range(max(0, depth - 4), depth))
    num_outputs = len(model.backbone.out_indices)
    if model.get("neck") is not None and "embed_dim" in model.neck:
        fill(model.neck, "embed_dim", dim, "model.neck.embed_dim", source)
    for head in ("decode_head", "auxiliary_head"):
        node = model.get(head)
        if node is None:
            continue
        index = node.get("in_index", 0)
        width = [dim] * len(index) if isinstance(index, (list, tuple)) else dim
        if isinstance(width, list) and len(width) > num_outputs:
            raise UserInputError(f"model.{head}.in_index={index} needs {len(width)} backbone outputs but "
                                 f"model.backbone.out_indices has {num_outputs}")
        fill(node, "in_channels", width, f"model.{head}.in_channels", source)
    paramwise = (cfg.get("optim_wrapper") or {}).get("paramwise_cfg")
    if paramwise is not None and "num_layers" in paramwise:
        fill(paramwise, "num_layers", depth, "optim_wrapper.paramwise_cfg.num_layers", f"{source} (depth)")
    return shape


def train_split_dir(dataset: dict) -> Path | None:
    """The folder of the training split (holding classes.yaml / stats.json), if the dataset has a root."""
    if dataset.get("data_root") is None:
        return None
    prefix = (dataset.get("data_prefix") or {}).get("img_path", "images")
    return Path(dataset["data_root"]) / Path(prefix).parent


def dataset_classes(dataset: dict) -> tuple[list[str], str] | None:
    """``(class names, source)`` of a dataset config: its classes.yaml, else its class's METAINFO."""
    if dataset.get("type") == "IndustrialSegDataset":
        folder = Path(dataset["classes_file"]) if dataset.get("classes_file") else train_split_dir(dataset)
        if folder is None:
            return None
        return list(read_classes(folder)["classes"]), str(folder / CLASSES_FILE)
    from mmseg.registry import DATASETS

    cls = DATASETS.get(dataset.get("type")) if isinstance(dataset.get("type"), str) else None
    names = (getattr(cls, "METAINFO", None) or {}).get("classes")
    return (list(names), f"{dataset['type']}.METAINFO") if names else None


def resolve_classes(cfg) -> None:
    """Heads' ``num_classes`` from the training data; ``class_weight`` lengths checked against it."""
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    found = dataset_classes(dataset)
    for head in ("decode_head", "auxiliary_head"):
        node = cfg.model.get(head)
        if node is None:
            continue
        if found is not None:
            fill(node, "num_classes", len(found[0]), f"model.{head}.num_classes", f"{found[1]} ({found[0]})")
        if node.get("num_classes") is None:
            raise UserInputError(f"model.{head}.num_classes is not set and the training dataset names no classes")
        weight = (node.get("loss_decode") or {}).get("class_weight")
        if weight is not None and len(weight) != node.num_classes:
            raise UserInputError(f"model.{head}.loss_decode.class_weight has {len(weight)} entries but there are "
                                 f"{node.num_classes} classes" + (f" in {found[1]}" if found else ""))


def resolve_normalisation(cfg, in_chans: int) -> None:
    """Data preprocessor mean/std: {train split}/stats.json, else the export's pretraining statistics."""
    pre = cfg.model.get("data_preprocessor")
    if pre is None or (pre.get("mean") is not None and pre.get("std") is not None):
        stats, source = None, None
    else:
        split = train_split_dir((cfg.get("train_dataloader") or {}).get("dataset") or {})
        stats = read_stats(split) if split is not None else None
        source = str(split / STATS_FILE) if stats is not None else None
        export = cfg.model.backbone.get("export_dir")
        if stats is None and export:
            found = export_norm_stats(export)
            stats = {"mean": found[0], "std": found[1]} if found else None
            source = str(Path(export) / CONFIG_FILE)
        if stats is None:
            raise UserInputError(f"no normalisation statistics: {split / STATS_FILE if split else 'the training split'} "
                                 "does not exist and no export gives them; run `mae-dbp data stats`, or set "
                                 "model.data_preprocessor.mean=[...] and .std=[...] (one per channel)")
        fill(pre, "mean", list(stats["mean"]), "model.data_preprocessor.mean", source)
        fill(pre, "std", list(stats["std"]), "model.data_preprocessor.std", source)
    if pre is not None:
        for key in ("mean", "std"):
            if pre.get(key) is not None and len(pre[key]) != in_chans:
                raise UserInputError(f"model.data_preprocessor.{key} has {len(pre[key])} values"
                                     + (f" (from {source})" if source else "")
                                     + f" but the encoder takes {in_chans} channels")


def resolve_schedule(cfg) -> None:
    """Scheduler ends: None -> ``train_cfg.max_iters``; beyond it -> clipped; empty ranges dropped."""
    max_iters = (cfg.get("train_cfg") or {}).get("max_iters")
    schedulers = cfg.get("param_scheduler")
    if max_iters is None or not isinstance(schedulers, list):
        return
    kept = []
    for scheduler in schedulers:
        if scheduler.get("by_epoch", True):
            kept.append(scheduler)
            continue
        end = scheduler.get("end")
        scheduler["end"] = max_iters if end is None else min(int(end), int(max_iters))
        if scheduler.get("begin", 0) < scheduler["end"]:
            kept.append(scheduler)
    cfg.param_scheduler = kept


def resolve(cfg) -> None:
    """Everything above, in place on an mmengine ``Config`` (after ``--cfg-options`` were merged)."""
    apply_inputs(cfg)
    shape = resolve_encoder_sizes(cfg)
    resolve_classes(cfg)
    resolve_normalisation(cfg, shape["in_chans"])
    resolve_schedule(cfg)
