"""A small natural-photograph pretraining set cut from photos that ship inside installed packages.

No download: the photographs are scikit-learn's ``datasets/images/china.jpg`` and ``flower.jpg``
(``sklearn.datasets.load_sample_images``) and matplotlib's ``mpl-data/sample_data/grace_hopper.jpg``
and ``Minduka_Present_Blue_Pack.png`` (``matplotlib.cbook.get_sample_data``); with ``sources="all"``
also five colour photographs that ship inside scikit-image (``skimage/data``: astronaut, chelsea,
coffee, rocket, motorcycle_left), for sets large enough that four photos would
repeat (the long-horizon benchmark's 4,000 crops). Each photo is split
into a training region and a held-out vertical strip at its right edge (``val_fraction`` of its width,
at least one crop wide); seeded random square crops are taken inside each region only, so no
validation pixel is ever seen in training. Written in the layout ``mae-dbp pretrain`` reads with
``data.root=OUT/train data.val_root=OUT/val data.stats=OUT/stats.json``::

    OUT/train/<photo>-<index>.png    8-bit RGB crops, size x size
    OUT/val/<photo>-<index>.png
    OUT/stats.json                   per-channel mean/std of the training crops (raw 0..255 units)
    OUT/crops.json                   every crop's photo, split and (y, x) origin, and each split's columns
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mae_dbp.data.io import write_image
from mae_dbp.data.split import check_fraction
from mae_dbp.errors import UserInputError
from mae_dbp.run_dir import prepare_output

OWNED = ("train", "val", "stats.json", "crops.json")
SOURCES = ("bundled", "all")  # bundled: scikit-learn's + matplotlib's four; all: + scikit-image's five
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


@dataclass(frozen=True)
class Region:
    """Columns ``[x0, x1)`` of one photo (all rows) that one split's crops come from."""

    photo: str
    split: str
    x0: int
    x1: int


def photo_paths(sources: str = "bundled") -> dict[str, Path]:
    """Name -> file of every photograph of ``sources`` (scikit-learn's need the ``digits`` extra,
    scikit-image's the ``bench`` extra)."""
    if sources not in SOURCES:
        raise UserInputError(f"--sources must be one of {', '.join(SOURCES)}, got {sources!r}")
    import matplotlib.cbook

    paths = {name: Path(matplotlib.cbook.get_sample_data(f"{name}{suffix}", asfileobj=False))
             for name, suffix in (("grace_hopper", ".jpg"), ("Minduka_Present_Blue_Pack", ".png"))}
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise UserInputError("two of the photos ship with scikit-learn: pip install scikit-learn "
                             "(or pip install -e '.[digits]')") from None
    for filename in load_sample_images().filenames:
        paths[Path(filename).stem] = Path(filename)
    if sources == "all":
        try:
            import skimage
        except ImportError:
            raise UserInputError("--sources all needs scikit-image's photographs: pip install scikit-image "
                                 "(or pip install -e '.[bench]')") from None
        for filename in SKIMAGE_PHOTOS:
            paths[Path(filename).stem] = Path(skimage.__file__).parent / "data" / filename
    return dict(sorted(paths.items()))


def load_photo(path: Path, scale: float = 1.0) -> np.ndarray:
    """One photo as uint8 RGB (3, H, W), alpha dropped, optionally resized by ``scale`` (antialiased)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if scale != 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        return np.moveaxis(np.asarray(image, dtype=np.uint8), -1, 0).copy()


def split_regions(name: str, width: int, size: int, val_fraction: float) -> tuple[Region, Region]:
    """Train columns on the left, a validation strip of ``max(size, val_fraction * width)`` on the right."""
    strip = max(size, round(val_fraction * width))
    if width - strip < size:
        raise UserInputError(f"photo {name} is {width} px wide: too narrow for {size} px crops "
                             f"with a {strip} px validation strip (use a smaller --size or --val-fraction)")
    return Region(name, "train", 0, width - strip), Region(name, "val", width - strip, width)


def crop_origins(rng: np.random.Generator, height: int, region: Region, size: int, count: int) -> np.ndarray:
    """``count`` seeded (y, x) origins whose size x size crop lies inside ``region`` (int array (count, 2))."""
    ys = rng.integers(0, height - size + 1, size=count)
    xs = rng.integers(region.x0, region.x1 - size + 1, size=count)
    return np.stack([ys, xs], axis=1)


def _share(counts_total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``counts_total`` over photos: one each (when there are enough), the rest in proportion to
    ``weights`` (largest remainder, sums exactly)."""
    base = 1 if counts_total >= len(weights) else 0
    rest = counts_total - base * len(weights)
    exact = rest * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: rest - counts.sum()]] += 1
    return counts + base


def write_photos(out: Path | str, size: int = 32, train_crops: int = 2048, val_crops: int = 256,
                 val_fraction: float = 0.2, scale: float = 1.0, seed: int = 0, force: bool = False,
                 sources: str = "bundled") -> dict[str, int]:
    """Write the crop set (see the module docstring); returns {"train": n, "val": n, "photos": n}.

    Crops per photo and split: one each, the rest proportional to the region's area. ``scale`` resizes each photo
    first (e.g. 0.5: more scene per crop). Refuses to replace an existing output unless ``force``.
    """
    from data_tools.stats import compute_stats

    if size < 4:
        raise UserInputError(f"--size must be at least 4 px, got {size}")
    if train_crops < 1 or val_crops < 1:
        raise UserInputError(f"need at least one train and one val crop, got {train_crops} / {val_crops}")
    check_fraction(val_fraction, "--val-fraction")
    photos = {name: load_photo(path, scale) for name, path in photo_paths(sources).items()}
    for name, image in photos.items():
        if image.shape[1] < size:
            raise UserInputError(f"photo {name} is {image.shape[1]} px high: too small for {size} px crops")
    regions = {name: split_regions(name, image.shape[2], size, val_fraction) for name, image in photos.items()}
    out = prepare_output(out, OWNED, force=force)
    rng = np.random.default_rng(seed)
    manifest = {"size": size, "scale": scale, "seed": seed, "val_fraction": val_fraction, "sources": sources,
                "regions": [], "crops": []}
    for split_index, (split, total) in enumerate((("train", train_crops), ("val", val_crops))):
        names = list(photos)
        areas = np.array([(regions[n][split_index].x1 - regions[n][split_index].x0) * photos[n].shape[1]
                          for n in names], dtype=float)
        for name, count in zip(names, _share(total, areas)):
            region, image = regions[name][split_index], photos[name]
            manifest["regions"].append(vars(region))
            for index, (y, x) in enumerate(crop_origins(rng, image.shape[1], region, size, int(count))):
                file = f"{split}/{name}-{index:05d}.png"
                write_image(out / file, image[:, y:y + size, x:x + size])
                manifest["crops"].append({"file": file, "photo": name, "split": split, "y": int(y), "x": int(x)})
    compute_stats(out / "train", out / "stats.json", progress=False)
    (out / "crops.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return {"train": train_crops, "val": val_crops, "photos": len(photos)}


def add_arguments(sub) -> None:
    """Register ``photos`` on the ``mae-dbp data`` sub-parsers (``sub``: argparse subparsers action)."""
    p = sub.add_parser("photos", help="seeded crops of the photographs bundled with scikit-learn and matplotlib")
    p.add_argument("--out", type=Path, required=True, help="output folder (train/, val/, stats.json, crops.json)")
    p.add_argument("--size", type=int, default=32, help="crop side in px (default 32)")
    p.add_argument("--train-crops", type=int, default=2048, help="training crops in total (default 2048)")
    p.add_argument("--val-crops", type=int, default=256, help="validation crops in total (default 256)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="width share of each photo's right-hand strip kept for validation (default 0.2)")
    p.add_argument("--scale", type=float, default=1.0, help="resize each photo by this factor first (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", choices=SOURCES, default="bundled",
                   help="bundled: the 4 photos of scikit-learn and matplotlib (default); all: + 5 of scikit-image")
    p.add_argument("--force", action="store_true", help="replace an existing output")


def run(args) -> int:
    """``mae-dbp data photos`` (``args`` from :func:`add_arguments`)."""
    counts = write_photos(args.out, size=args.size, train_crops=args.train_crops, val_crops=args.val_crops,
                          val_fraction=args.val_fraction, scale=args.scale, seed=args.seed, force=args.force,
                          sources=args.sources)
    print(f"wrote {counts['train']} train and {counts['val']} val {args.size}x{args.size} crops of "
          f"{counts['photos']} photos to {args.out}")
    return 0
