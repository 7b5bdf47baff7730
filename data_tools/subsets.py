"""Deterministic random subsets of ImageNet- and ADE20K-layout folders (the DBP-MAE recipe uses 10%).

ImageNet layout: ``SRC/train/<class>/*`` and ``SRC/val/<class>/*`` (a flat ``val/`` also works);
the fraction is taken per class, at least one image per class. ADE20K layout:
``SRC/images/{training,validation}/*.jpg`` with ``SRC/annotations/{training,validation}/<stem>.png``;
image/annotation pairs are kept together. Validation splits are kept whole unless ``subset_val``.

Output is a tree of symlinks with the same layout (``mode="symlink"``), or text files
``train.txt`` / ``val.txt`` of paths relative to ``SRC`` (``mode="list"``; for ADE20K only the image
path, the annotation is ``annotations/<split>/<stem>.png``). The choice for one class depends only on
(seed, class name, file names), not on the other classes.
"""

from __future__ import annotations

from pathlib import Path

from mae_dbp.data.io import IMAGE_SUFFIXES
from mae_dbp.data.split import check_fraction, pick
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import prepare_output

MODES = ("symlink", "list")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def choose(items: list[Path], fraction: float, seed: int, key: str) -> list[Path]:
    """A sorted random subset of ``round(fraction * len(items))`` items (at least 1 if any), seeded
    by (seed, key) (:func:`mae_dbp.data.split.pick`)."""
    return [items[i] for i in pick(len(items), fraction, f"{seed}/{key}", keep_one_out=False)]


def _check(src: Path, fraction: float, mode: str) -> None:
    if not src.is_dir():
        raise UserInputError(f"source folder {src} does not exist")
    check_fraction(fraction, "--fraction", high_open=False)
    if mode not in MODES:
        raise UserInputError(f"mode must be one of {MODES}, got {mode!r}")


def _emit(src: Path, out: Path, files: dict[str, list[Path]], mode: str) -> None:
    """Write the chosen files per split: symlinks mirroring ``src`` or ``<split>.txt`` lists."""
    for split, chosen in files.items():
        if mode == "list":
            lines = [p.relative_to(src).as_posix() for p in chosen]
            (out / f"{split}.txt").write_text("".join(line + "\n" for line in lines))
            continue
        for path in chosen:
            target = out / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())


def imagenet_subset(src: Path | str, out: Path | str, fraction: float, seed: int = 0, mode: str = "symlink",
                    subset_val: bool = False, force: bool = False) -> dict[str, int]:
    """Take ``fraction`` of every class of ``SRC/train`` (and of ``SRC/val`` if ``subset_val``).

    Returns the number of chosen images per split.
    """
    src = Path(src)
    _check(src, fraction, mode)
    train = src / "train"
    if not train.is_dir():
        raise UserInputError(f"{train} does not exist (expected ImageNet layout train/<class>/*)")
    chosen: dict[str, list[Path]] = {}
    for split in ("train", "val"):
        root = src / split
        if not root.is_dir():
            continue
        classes = sorted(d for d in root.iterdir() if d.is_dir())
        groups = {d.name: _files(d) for d in classes}
        if _files(root):
            groups[""] = _files(root)  # flat val/ with images directly inside
        if split == "train":
            empty = [name for name, items in groups.items() if not items]
            if empty:
                raise UserInputError(f"{root / empty[0]}: class folder has no images")
            if not groups:
                raise UserInputError(f"{root}: no class folders (expected train/<class>/*)")
        take = fraction if (split == "train" or subset_val) else 1.0
        chosen[split] = [p for name, items in groups.items() for p in choose(items, take, seed, f"{split}/{name}")]
    owned = tuple(f"{s}.txt" for s in chosen) if mode == "list" else tuple(chosen)
    out = prepare_output(out, owned, force=force)
    _emit(src, out, chosen, mode)
    return {split: len(files) for split, files in chosen.items()}


def _ade_pairs(src: Path, split: str) -> list[Path]:
    """Images of one ADE20K split, checking each has its annotation."""
    images = _files(src / "images" / split)
    for image in images:
        annotation = src / "annotations" / split / (image.stem + ".png")
        if not annotation.is_file():
            raise UserInputError(f"{image}: no annotation {annotation}")
    return images


def ade20k_subset(src: Path | str, out: Path | str, fraction: float, seed: int = 0, mode: str = "symlink",
                  subset_val: bool = False, force: bool = False) -> dict[str, int]:
    """Take ``fraction`` of ``SRC/images/training`` with their annotations (validation whole unless ``subset_val``).

    Returns the number of chosen images per split (``training``, ``validation``).
    """
    src = Path(src)
    _check(src, fraction, mode)
    if not (src / "images" / "training").is_dir():
        raise UserInputError(f"{src / 'images' / 'training'} does not exist (expected ADE20K layout)")
    chosen_images: dict[str, list[Path]] = {}
    for split in ("training", "validation"):
        if not (src / "images" / split).is_dir():
            continue
        images = _ade_pairs(src, split)
        if split == "training" and not images:
            raise UserInputError(f"no images (png/jpg/tif) in {src / 'images' / split}")
        take = fraction if (split == "training" or subset_val) else 1.0
        chosen_images[split] = choose(images, take, seed, split)
    list_names = {"training": "train", "validation": "val"}
    if mode == "list":
        out = prepare_output(out, tuple(f"{list_names[s]}.txt" for s in chosen_images), force=force)
        _emit(src, out, {list_names[s]: files for s, files in chosen_images.items()}, mode)
    else:
        out = prepare_output(out, ("images", "annotations"), force=force)
        pairs = {s: [p for image in files for p in (image, src / "annotations" / s / (image.stem + ".png"))]
                 for s, files in chosen_images.items()}
        _emit(src, out, pairs, mode)
    return {split: len(files) for split, files in chosen_images.items()}
