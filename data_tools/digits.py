"""Small labelled image folders for classification: scikit-learn's digits, and generated toy classes.

Both write the layout ``mae-dbp classify`` reads (one sub-folder per class)::

    OUT/train/<class>/<index>.png    8-bit grey PNGs
    OUT/val/<class>/<index>.png

``write_digits`` uses the 1,797 8 x 8 handwritten digits (10 classes, values 0..16) that ship
inside scikit-learn (no download), rescaled to 0..255 and upsampled (bicubic) to ``size`` px; the
train / val split is stratified and seeded. ``write_toy_classes`` draws clearly different noisy
patterns per class (stripes, blobs, checkers, ...) for tests and quick demos; it needs numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mae_dbp.data.io import write_image
from mae_dbp.data.split import check_fraction, pick
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import prepare_output

SPLITS = ("train", "val")


def _stratified_val(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask (N,): round(val_fraction x class count) items of each class, at least 1 (and
    never a whole class), go to val; one :func:`mae_dbp.data.split.pick` per class."""
    check_fraction(val_fraction, "--val-fraction")
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        is_val[members[pick(len(members), val_fraction, f"{seed}/{label}")]] = True
    return is_val


def write_class_folders(out: Path | str, images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                        val_fraction: float, seed: int, force: bool = False) -> dict[str, int]:
    """Write uint8 images (N, H, W) with labels (N,) as OUT/{train,val}/<class>/<index>.png.

    Returns the image count per split. Existing ``train`` / ``val`` folders raise FileExistsError
    unless ``force`` (which replaces only those two folders).
    """
    out = prepare_output(out, SPLITS, force=force)
    is_val = _stratified_val(labels, val_fraction, seed)
    width = len(str(len(images) - 1))
    for index, (image, label) in enumerate(zip(images, labels)):
        split = "val" if is_val[index] else "train"
        write_image(out / split / classes[int(label)] / f"{index:0{width}d}.png", image[None])
    return {"train": int((~is_val).sum()), "val": int(is_val.sum())}


def _upsample(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) float in [0, 1] -> (N, size, size) uint8, bicubic with antialiasing."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(images.astype(np.float32))[:, None]
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return (tensor[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_digits(out: Path | str, size: int = 16, val_fraction: float = 0.2, seed: int = 0,
                 force: bool = False) -> dict[str, int]:
    """scikit-learn's digits as an image folder of ``size`` x ``size`` grey PNGs (classes "0".."9").

    Needs scikit-learn (the data ship inside it). Returns {"train": n, "val": n}.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserInputError("the digits data ship with scikit-learn: pip install scikit-learn") from None
    if size < 8:
        raise UserInputError(f"size must be >= 8 px (the digits are 8 x 8), got {size}")
    digits = load_digits()
    images = _upsample(digits.images / 16.0, size)
    return write_class_folders(out, images, digits.target, [str(d) for d in range(10)], val_fraction, seed, force)


def _toy_pattern(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size) pattern in [0, 1] of class ``kind`` with a random phase / position."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(0.18, 0.3)
    cx, cy = rng.uniform(0.3, 0.7, size=2)
    patterns = [
        0.5 + 0.5 * np.sin(2 * np.pi * y / period + phase),  # horizontal stripes
        0.5 + 0.5 * np.sin(2 * np.pi * x / period + phase),  # vertical stripes
        np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02),  # one bright blob
        0.5 + 0.5 * np.sign(np.sin(2 * np.pi * x / period + phase) * np.sin(2 * np.pi * y / period)),  # checkers
        0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / period + phase),  # diagonal stripes
        1.0 - np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02),  # one dark hole
    ]
    return patterns[kind % len(patterns)]


def write_toy_classes(out: Path | str, per_class: int = 40, size: int = 16, num_classes: int = 4,
                      val_fraction: float = 0.25, seed: int = 0, noise: float = 0.15,
                      force: bool = False) -> dict[str, int]:
    """Generated classes "c0".."c{K-1}" of clearly different noisy patterns (K <= 6), ``per_class`` each."""
    if not 2 <= num_classes <= 6:
        raise UserInputError(f"num_classes must be between 2 and 6, got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    images = np.stack([_toy_pattern(int(k), size, rng) for k in labels])
    images = np.clip(images + rng.normal(0.0, noise, images.shape), 0.0, 1.0)
    images = (images * 255).round().astype(np.uint8)
    return write_class_folders(out, images, labels, [f"c{k}" for k in range(num_classes)], val_fraction, seed, force)


def add_arguments(sub) -> None:
    """Register ``digits`` on the ``mae-dbp data`` sub-parsers (``sub``: argparse subparsers action)."""
    p = sub.add_parser("digits", help="scikit-learn's 8x8 digits as a train/val image folder (no download)")
    p.add_argument("--out", type=Path, required=True, help="output folder (train/<class>/, val/<class>/)")
    p.add_argument("--size", type=int, default=16, help="side length in px after bicubic upsampling (default 16)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="stratified validation share (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace existing train/ and val/ folders")


def run(args) -> int:
    """``mae-dbp data digits`` (``args`` from :func:`add_arguments`)."""
    counts = write_digits(args.out, size=args.size, val_fraction=args.val_fraction, seed=args.seed, force=args.force)
    print(f"wrote {counts['train']} train and {counts['val']} val {args.size}x{args.size} digit images to {args.out}")
    return 0
