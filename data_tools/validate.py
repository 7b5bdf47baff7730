"""Check an image folder before training: every image readable and free of NaN/Inf pixels,
channels / bit depth / size as declared, and (when ``DIR/masks`` exists) every mask present, the
same H, W as its image and with values among the classes of ``DIR/classes.yaml`` or its ignore index.

Data that reads fine but would train badly is reported as warnings (not problems): 8-bit images
mixed with 16-bit ones, and images smaller than ``min_size`` (default: the folder's most common
size) — the same checks pretraining runs (:mod:`mae_dbp.data.checks`).

Accepts the industrial layout (``DIR/images``, ``DIR/masks``, ``DIR/classes.yaml``) or a plain
folder of images (unlabeled pretraining data). Files are read one at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mae_dbp.data.checks import mixed_depth_warning, small_image_warning
from mae_dbp.data.io import (CLASSES_FILE, channels_last_hint, image_folder, list_images, mask_folder, mask_path_for, mask_value_problem,
                             read_classes, read_image, read_mask)
from mae_dbp.errors import UserInputError

BIT_DEPTHS = {8: np.uint8, 16: np.uint16}


@dataclass
class ValidationReport:
    """What :func:`validate` found: counts, what was seen, and one (path, reason) per problem."""

    root: Path
    num_images: int = 0
    num_masks: int = 0
    channels: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    sizes: Counter = field(default_factory=Counter)  # (H, W) -> count
    problems: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # data that reads fine but trains badly
    headers: list[tuple[Path, str, tuple[int, int]]] = field(default_factory=list)  # (path, dtype, (H, W))

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A few human-readable lines (no problem list)."""
        def fmt(counter: Counter) -> str:
            return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items(), key=lambda kv: -kv[1])[:5]) or "-"
        return "\n".join([
            f"{self.root}: {self.num_images} images, {self.num_masks} masks, {len(self.problems)} problems, "
            f"{len(self.warnings)} warnings",
            f"  channels: {fmt(self.channels)}",
            f"  dtypes:   {fmt(self.dtypes)}",
            f"  sizes:    {fmt(Counter({f'{h}x{w}': n for (h, w), n in self.sizes.items()}))}",
        ])

    def problem_lines(self) -> list[str]:
        """One ``path: reason`` line per problem."""
        return [f"{path}: {reason}" for path, reason in self.problems]

    def warning_lines(self) -> list[str]:
        """One ``warning: ...`` line per warning."""
        return [f"warning: {line}" for line in self.warnings]


def _check_image(report: ValidationReport, path: Path, channels: int | None, bit_depth: int | None,
                 size: tuple[int, int] | None) -> tuple[int, int] | None:
    """Read and check one image; returns its (H, W) or None if unreadable."""
    try:
        image = read_image(path)
    except UserInputError as error:
        report.problems.append((path, str(error).removeprefix(f"{path}: ")))
        return None
    c, h, w = image.shape
    report.headers.append((path, str(image.dtype), (h, w)))
    report.channels[c] += 1
    report.dtypes[str(image.dtype)] += 1
    report.sizes[(h, w)] += 1
    if channels is not None and c != channels:
        report.problems.append((path, f"expected {channels} channels, found {c}{channels_last_hint(image.shape)}"))
    elif channels is None and channels_last_hint(image.shape):
        report.problems.append((path, f"found {c} channels of {h} x {w} px{channels_last_hint(image.shape)}"))
    if bit_depth is not None and image.dtype != BIT_DEPTHS[bit_depth]:
        report.problems.append((path, f"expected {bit_depth}-bit ({np.dtype(BIT_DEPTHS[bit_depth])}), found {image.dtype}"))
    elif bit_depth is None and image.dtype not in (np.uint8, np.uint16, np.float32):
        report.problems.append((path, f"unsupported dtype {image.dtype} (use uint8, uint16 or float32)"))
    if size is not None and (h, w) != size:
        report.problems.append((path, f"expected size {size[0]}x{size[1]}, found {h}x{w}"))
    return h, w


def _check_mask(report: ValidationReport, path: Path, hw: tuple[int, int] | None, classes: dict | None) -> None:
    if not path.is_file():
        report.problems.append((path, "missing mask for image"))
        return
    try:
        mask = read_mask(path)
    except UserInputError as error:
        report.problems.append((path, str(error).removeprefix(f"{path}: ")))
        return
    report.num_masks += 1
    if hw is not None and mask.shape != hw:
        report.problems.append((path, f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is {hw[0]}x{hw[1]}"))
    if classes is not None:
        problem = mask_value_problem(mask, len(classes["classes"]), classes["ignore_index"])
        if problem:
            report.problems.append((path, problem))


def _add_warnings(report: ValidationReport, min_size: int | None) -> None:
    """Mixed 8/16-bit images and images smaller than ``min_size`` (None: the most common size)."""
    if not report.headers:
        return
    paths, dtypes, sizes = zip(*report.headers)
    report.warnings.append(mixed_depth_warning(paths, dtypes))
    limit = f"--min-size {min_size} px"
    if min_size is None:
        (h, w), _ = Counter(sizes).most_common(1)[0]
        min_size, limit = min(h, w), f"the folder's most common size {h}x{w}"
    report.warnings.append(small_image_warning(paths, sizes, min_size, limit))
    report.warnings = [line for line in report.warnings if line]


def validate(directory: Path | str, channels: int | None = None, bit_depth: int | None = None,
             size: int | tuple[int, int] | None = None, progress: bool = False,
             min_size: int | None = None) -> ValidationReport:
    """Check every image (and mask) under ``directory``; problems and warnings are collected, not raised.

    ``size`` is a side length in px (square) or (H, W); ``min_size`` the smallest side (px) training
    will crop. Raises :class:`UserInputError` only when the folder itself is unusable (missing, or
    without images).
    """
    from tqdm import tqdm

    root = Path(directory)
    if bit_depth is not None and bit_depth not in BIT_DEPTHS:
        raise UserInputError(f"bit depth must be 8 or 16, got {bit_depth}")
    hw_size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    image_dir = image_folder(root)
    images = list_images(image_dir)
    report = ValidationReport(root=root)
    has_masks = mask_folder(root) is not None
    classes = None
    if has_masks and not (root / CLASSES_FILE).is_file():
        report.problems.append((root / CLASSES_FILE, "missing (needed to check the mask values)"))
    elif has_masks:
        try:
            classes = read_classes(root)
        except UserInputError as error:
            report.problems.append((root / CLASSES_FILE, str(error).removeprefix(f"{root / CLASSES_FILE}: ")))
    expected_masks = set()
    for path in tqdm(images, desc="validate", unit="img", disable=not progress):
        report.num_images += 1
        hw = _check_image(report, path, channels, bit_depth, hw_size)
        if has_masks:
            mask_path = mask_path_for(root, path)
            expected_masks.add(mask_path.resolve())
            _check_mask(report, mask_path, hw, classes)
    if has_masks:
        for extra in sorted((root / "masks").rglob("*.png")):
            if extra.resolve() not in expected_masks:
                report.problems.append((extra, "mask without an image"))
    if channels is None and len(report.channels) > 1:
        report.problems.append((image_dir, f"mixed channel counts {dict(report.channels)}"))
    _add_warnings(report, min_size)
    return report
