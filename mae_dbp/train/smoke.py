"""``mae-dbp pretrain --config RECIPE --smoke data.root=FOLDER``: any recipe, small, in about a minute.

A smoke run keeps what a recipe says about the data (``model.in_chans``, the bit depth the files
have, the statistics, ``data.crop_scale``, the reading options) and the method (``decor.*``,
``train.optimizer``, the recipe's peak lr) and shrinks the rest:

- model: a tiny ViT (embed 96, depth 4, 3 heads, 8 px patches) at 64 px, a 64-wide decoder of 2 blocks
  (with ``model.init_from`` only the image size: the encoder must stay the checkpoint's);
- batch: 16 images per step (base_lr rescaled so the peak lr stays the recipe's);
- length: 2 epochs, at most 60 s of training; warm-up 0.5 epoch;
- machine: 0 loader workers, no mixed precision, no compile, no emissions tracking;
- folders: the validation split is a fraction of ``data.root`` (the recipe's ``val_root`` names its
  own folder), the run folder is ``log.dir/<recipe>-smoke-<time>``; a recipe's ``data.stats`` file
  that does not exist gives way to ``stats.json`` beside the images, else to the statistics of up to
  32 of them.

Every shrinking is a ``key=value`` override put before the user's own, so any of them can be
given back on the command line (``--smoke model.img_size=128``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, TypeVar

C = TypeVar("C")

SMOKE_BATCH = 16
STATS_IMAGES = 32
SMOKE = {
    "model.encoder": "vit_tiny_patch16_224",
    "model.img_size": "64",
    "model.encoder_args.embed_dim": "96",
    "model.encoder_args.depth": "4",
    "model.encoder_args.num_heads": "3",
    "model.encoder_args.patch_size": "8",
    "model.decoder.dim": "64",
    "model.decoder.depth": "2",
    "model.decoder.heads": "4",
    "train.batch_size": str(SMOKE_BATCH),
    "train.effective_batch": str(SMOKE_BATCH),
    "train.epochs": "2",
    "train.max_train_seconds": "60",
    "train.warmup_epochs": "0.5",
    "train.mixed_precision": "no",
    "train.compile": "false",
    "data.num_workers": "0",
    "data.val_root": "null",
    "log.name": "null",
    "log.emissions": "false",
}


def _keys(overrides: Iterable[str]) -> set[str]:
    return {text.split("=", 1)[0].strip() for text in overrides if "=" in text}


def _stats_overrides(config) -> tuple[list[str], str]:
    """Overrides for the statistics when the recipe's ``data.stats`` file is missing, and what they say."""
    data = config.data
    if not data.stats or Path(data.stats).is_file() or not data.root:
        return [], ""
    from mae_dbp.data.io import image_folder, list_images, read_image

    beside = Path(data.root) / "stats.json"
    if beside.is_file():
        return [f"data.stats={beside}"], f"statistics from {beside} (the recipe's {data.stats} does not exist)"
    from data_tools.stats import RunningMoments

    images = list_images(image_folder(data.root))[:STATS_IMAGES]
    moments = None
    for path in images:
        image = read_image(path)
        moments = moments or RunningMoments(image.shape[0])
        moments.update(image)
    mean = ",".join(f"{v:.6g}" for v in moments.mean)
    std = ",".join(f"{max(v, 1e-6):.6g}" for v in moments.std)
    return ["data.stats=null", f"data.mean=[{mean}]", f"data.std=[{std}]"], (
        f"statistics of {len(images)} image(s) of {data.root} (the recipe's {data.stats} does not exist)")


def smoke_config(schema: type[C], path: str | None, overrides: list[str]) -> tuple[C, str]:
    """(the smoke config of recipe ``path`` with the user's ``overrides`` on top, one line saying what
    was shrunk). The user's overrides win over every shrinking."""
    from mae_dbp.config import load_config

    recipe = load_config(schema, path, overrides)
    user = _keys(overrides)
    shrink = {key: value for key, value in SMOKE.items() if key not in user}
    if recipe.model.init_from:  # the encoder must stay the checkpoint's architecture: only the image shrinks
        shrink = {key: value for key, value in shrink.items() if not key.startswith(("model.encoder", "model.decoder"))}
    if "train.base_lr" not in user:  # keep the recipe's peak lr = base_lr x effective_batch / 256
        base = recipe.train.base_lr * recipe.train.effective_batch / int(shrink.get("train.effective_batch", SMOKE_BATCH))
        shrink["train.base_lr"] = f"{base:.6g}"
    stats, stats_said = ([], "") if user & {"data.stats", "data.mean", "data.std"} else _stats_overrides(recipe)
    config = load_config(schema, path, [*(f"{k}={v}" for k, v in shrink.items()), *stats, *overrides])
    model, train = config.model, config.train
    kept = (f"kept in_chans {model.in_chans}, crop_scale {list(config.data.crop_scale)}, "
            f"{'DBP on ' + ', '.join(config.decor.sites) if config.decor.enabled else 'BP'}, {train.optimizer} at the "
            f"recipe's peak lr")
    shape = (f"{model.encoder} (embed {model.encoder_args['embed_dim']}, depth {model.encoder_args['depth']})"
             if "embed_dim" in model.encoder_args and "depth" in model.encoder_args else
             f"{model.encoder} (kept{' for model.init_from' if model.init_from else ''})")
    line = (f"smoke run: shrank {recipe.model.encoder} at {recipe.model.img_size} px to {shape} at "
            f"{model.img_size} px, batch {recipe.train.effective_batch} to {train.effective_batch}, {recipe.train.epochs} "
            f"epochs to {train.epochs}" + (f" (at most {train.max_train_seconds:g} s)" if train.max_train_seconds else "")
            + f", workers {recipe.data.num_workers} to "
            f"{config.data.num_workers}, mixed precision {recipe.train.mixed_precision} to {train.mixed_precision}; {kept}"
            + (f"; {stats_said}" if stats_said else ""))
    return config, line
