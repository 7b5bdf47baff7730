"""Reading and writing images, index masks and the industrial folder description.

Images are always handled as ``(C, H, W)`` arrays in the file's own dtype (uint8, uint16 or
float32): nothing here rescales pixel values. The industrial folder layout used across the project::

    DIR/images/<stem>.tif|.png   images (TIFF stored HWC, or HW for one channel)
    DIR/masks/<stem>.png         8-bit index masks, same stem and H, W as the image
    DIR/classes.yaml             classes: [...], palette: [[r, g, b], ...], ignore_index: 255
    DIR/stats.json               optional per-channel mean/std in raw pixel units

:func:`image_folder` / :func:`mask_folder` are the one place that decides where a folder's images
and masks are. A float image with NaN or Inf pixels is a bad file (:func:`check_finite`);
:func:`read_header` gives shape and dtype without decoding pixels. Every failure caused by a file
raises :class:`~mae_dbp.errors.UserInputError` with a one-line message that names the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mae_dbp.errors import UserInputError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
MASK_SUFFIX = ".png"
CLASSES_FILE = "classes.yaml"
STATS_FILE = "stats.json"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def image_folder(root: Path | str) -> Path:
    """The folder holding a data set's images: ``root/images`` when it exists (the industrial
    layout, ``images/`` beside ``masks/``), otherwise ``root`` itself."""
    root = Path(root)
    return root / "images" if (root / "images").is_dir() else root


def mask_folder(root: Path | str) -> Path | None:
    """``root/masks`` when ``root`` has the industrial layout (``images/`` and ``masks/``), else None."""
    root = Path(root)
    return root / "masks" if (root / "images").is_dir() and (root / "masks").is_dir() else None


def list_images(root: Path | str, recursive: bool = True) -> list[Path]:
    """All image files under ``root`` (suffixes in :data:`IMAGE_SUFFIXES`), sorted; hidden files skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"data folder {root} does not exist")
    pattern = root.rglob("*") if recursive else root.glob("*")
    found = sorted(
        p for p in pattern
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not found:
        raise UserInputError(f"no images (png/jpg/tif) in {root}")
    return found


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        array = series.asarray()
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ValueError(f"unsupported TIFF axes {axes!r} with shape {array.shape}")
    if axes.endswith("S"):  # samples (channels) last: HWC
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    return array  # pages / planar channels first: CHW


_PIL_CONVERT = {"1": "L", "P": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in _PIL_CONVERT:
            image = image.convert(_PIL_CONVERT[image.mode])
        array = np.asarray(image)
    if array.dtype == np.int32:  # mode "I": keep 16-bit content as uint16 when it fits
        if array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max:
            array = array.astype(np.uint16)
    if array.dtype.byteorder == ">":  # "I;16B"
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim == 2:
        return array[None]
    return np.ascontiguousarray(np.moveaxis(array, -1, 0))


def check_finite(path: Path | str, array: np.ndarray) -> None:
    """Raise naming ``path`` if the float ``(C, H, W)`` ``array`` holds NaN or Inf pixels.

    Integer images cannot hold either, so they cost nothing; a float image costs one pass.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    c, y, x = (int(v) for v in np.argwhere(~finite)[0])
    raise UserInputError(f"{path}: {bad} NaN/Inf pixel{'s' if bad > 1 else ''} (first at channel {c}, "
                         f"row {y}, column {x}); replace them or remove the file")


def channels_last_hint(shape: tuple[int, ...]) -> str:
    """For a ``(C, H, W)`` shape that looks like a channels-last TIFF read as pages (thousands of
    "channels", a width of a few px): how to rewrite it; else ``""``."""
    c, _, w = shape
    if c < 16 or w > 4:
        return ""
    return (f" (a channels-last H x W x {w} array written as {c} pages of {shape[1]} x {w} px: rewrite it with "
            f"tifffile.imwrite(path, array.transpose(2, 0, 1)) or tifffile.imwrite(path, array, "
            f"photometric='minisblack', planarconfig='contig'); docs/usage.md 'Image layouts')")


def read_image(path: Path | str, channels: int | None = None, finite: bool = True) -> np.ndarray:
    """Read an image file as a ``(C, H, W)`` array in the file's own dtype.

    TIFFs go through tifffile (HWC or HW on disk), png/jpg through Pillow (16-bit PNGs stay
    uint16). ``channels`` (optional) is the required channel count. ``finite``: a float image
    with NaN or Inf pixels is an error naming the file (:func:`check_finite`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: cannot read image (file does not exist)")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = _read_tiff(path)
        else:
            array = _read_pil(path)
    except UserInputError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file
        raise UserInputError(f"{path}: cannot read image ({_one_line(error)})") from error
    if array.size == 0:
        raise UserInputError(f"{path}: cannot read image (empty image {tuple(array.shape)})")
    if channels is not None and array.shape[0] != channels:
        raise UserInputError(f"{path}: expected {channels} channels, found {array.shape[0]}"
                             f"{channels_last_hint(array.shape)}")
    if finite:
        check_finite(path, array)
    return array


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about its image: ``channels``, ``height``, ``width`` (px) and the
    ``dtype`` :func:`read_image` returns (``"uint8"``, ``"uint16"``, ``"float32"``, ...) and the
    number of reduced-resolution ``levels`` stored beside it (pyramidal TIFF; 0 otherwise)."""

    channels: int
    height: int
    width: int
    dtype: str
    levels: int = 0


# Pillow mode -> (channels, dtype) as _read_pil returns them ("P" counted as RGB, "I" as 16-bit)
_PIL_HEADER = {"1": (1, "uint8"), "L": (1, "uint8"), "P": (3, "uint8"), "LA": (2, "uint8"), "La": (2, "uint8"),
               "RGB": (3, "uint8"), "CMYK": (3, "uint8"), "YCbCr": (3, "uint8"), "LAB": (3, "uint8"),
               "HSV": (3, "uint8"), "PA": (4, "uint8"), "RGBA": (4, "uint8"), "RGBa": (4, "uint8"),
               "F": (1, "float32"), "I": (1, "uint16"), "I;16": (1, "uint16"), "I;16B": (1, "uint16"),
               "I;16L": (1, "uint16")}


def read_header(path: Path | str) -> ImageHeader:
    """Shape and dtype of an image from its header only (no pixel decoding; falls back to a full
    read for layouts the header cannot answer). Errors as :func:`read_image`."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes, dtype, levels = tuple(series.shape), series.axes, str(series.dtype), len(series.levels) - 1
            if len(shape) == 2:
                return ImageHeader(1, shape[0], shape[1], dtype, levels)
            if len(shape) == 3:
                c, h, w = (shape[2], shape[0], shape[1]) if axes.endswith("S") else shape
                return ImageHeader(c, h, w, dtype, levels)
        else:
            from PIL import Image

            with Image.open(path) as image:
                mode, (w, h) = image.mode, image.size
                if mode == "P" and "transparency" in image.info:
                    mode = "RGBA"
            if mode in _PIL_HEADER:
                return ImageHeader(_PIL_HEADER[mode][0], h, w, _PIL_HEADER[mode][1])
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file
        raise UserInputError(f"{path}: cannot read image ({_one_line(error)})") from error
    array = read_image(path, finite=False)
    return ImageHeader(array.shape[0], array.shape[1], array.shape[2], str(array.dtype))


def write_tiff(target, array_chw: np.ndarray, levels: Sequence[np.ndarray] = ()) -> None:
    """A ``(C, H, W)`` array as an uncompressed, contiguous TIFF into ``target`` (a path or a binary
    file object): HWC on disk (HW for one channel; 3-channel uint8 as RGB), and its reduced-resolution
    ``levels`` (each ``(C, h, w)``) in SubIFDs, the pyramid layout of OME-TIFF and libvips."""
    import tifffile

    def layout(array: np.ndarray) -> tuple[np.ndarray, dict]:
        if array.shape[0] == 1:
            return array[0], {"photometric": "minisblack"}
        photometric = "rgb" if array.shape[0] == 3 and array.dtype == np.uint8 else "minisblack"
        return np.ascontiguousarray(np.moveaxis(array, 0, -1)), {"photometric": photometric, "planarconfig": "contig"}

    with tifffile.TiffWriter(target) as tiff:
        data, options = layout(array_chw)
        tiff.write(data, **({"subifds": len(levels)} if levels else {}), **options)
        for level in levels:
            data, options = layout(level)
            tiff.write(data, subfiletype=1, **options)


def write_image(path: Path | str, array_chw: np.ndarray) -> Path:
    """Write a ``(C, H, W)`` (or ``(H, W)``) array: TIFF for any C and dtype, PNG for 1/3-channel
    uint8 or 1-channel uint16, JPEG (lossy, quality 95) for 1/3-channel uint8. The format follows
    the suffix of ``path``."""
    path = Path(path)
    array = np.asarray(array_chw)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise UserInputError(f"{path}: cannot write an array of shape {array.shape} (need C, H, W)")
    path.parent.mkdir(parents=True, exist_ok=True)
    c = array.shape[0]
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        write_tiff(path, array)
        return path
    if suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        png = suffix == ".png"
        ok = (c in (1, 3) and array.dtype == np.uint8) or (png and c == 1 and array.dtype == np.uint16)
        if not ok:
            holds = "1/3-channel uint8 or 1-channel uint16" if png else "1/3-channel uint8"
            raise UserInputError(f"{path}: {suffix[1:].upper()} holds {holds}, got {c} x {array.dtype}; use .tif")
        image = Image.fromarray(array[0] if c == 1 else np.moveaxis(array, 0, -1))
        image.save(path, **({} if png else {"quality": 95}))
        return path
    raise UserInputError(f"{path}: unsupported image suffix {path.suffix!r} (use .tif, .png or .jpg)")


def read_mask(path: Path | str) -> np.ndarray:
    """Read an index mask (PNG or TIFF) as ``(H, W)``: uint8 for 8-bit files, int32 otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: mask file does not exist")
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = _read_tiff(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                image.load()
                array = np.asarray(image)  # mode "P" gives the indices, not the colours
            if array.ndim == 3:
                array = np.moveaxis(array, -1, 0)
            else:
                array = array[None]
    except Exception as error:  # noqa: BLE001
        raise UserInputError(f"{path}: cannot read mask ({_one_line(error)})") from error
    if array.shape[0] != 1:
        raise UserInputError(f"{path}: a mask must have 1 channel of class indices, found {array.shape[0]}")
    mask = array[0]
    if mask.dtype == np.uint8:
        return mask
    if not np.issubdtype(mask.dtype, np.integer):
        raise UserInputError(f"{path}: a mask must hold integer class indices, found {mask.dtype}")
    return mask.astype(np.int32)


def mask_value_problem(mask: np.ndarray, num_classes: int, ignore_index: int) -> str | None:
    """What is wrong with the values of an index ``mask`` (H, W), or None: every value must be a
    class in ``0..num_classes-1`` or ``ignore_index``. One ``bincount``, no sort."""
    if mask.size == 0:
        return "empty mask"
    low = min(int(mask.min()), 0)
    values = np.flatnonzero(np.bincount((mask.ravel().astype(np.int64) - low))) + low
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
    if not bad:
        return None
    shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
    return f"mask values {shown} are neither classes 0..{num_classes - 1} nor the ignore index {ignore_index}"


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, path: Path | str) -> None:
    """Raise naming ``path`` if :func:`mask_value_problem` finds a value that is no class."""
    problem = mask_value_problem(mask, num_classes, ignore_index)
    if problem:
        raise UserInputError(f"{path}: {problem}")


def write_mask(path: Path | str, mask: np.ndarray, palette: list[list[int]] | None = None) -> Path:
    """Write an ``(H, W)`` index mask as an 8-bit PNG (grayscale, or palette mode if ``palette``)."""
    from PIL import Image

    path = Path(path)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise UserInputError(f"{path}: a mask must be (H, W), got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise UserInputError(f"{path}: mask values must be in 0..255 for an 8-bit PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8))
    if palette is not None:
        image = image.convert("P")
        flat = [int(v) for colour in palette for v in colour]
        image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)
    return path


def default_palette(num_classes: int) -> list[list[int]]:
    """A distinct RGB colour per class (class 0 black), deterministic."""
    colours = [[0, 0, 0]]
    for i in range(1, num_classes):
        hue = (i * 0.618034) % 1.0
        r, g, b = (int(255 * min(1.0, max(0.0, abs(((hue * 6 + k) % 6) - 3) - 1))) for k in (0, 4, 2))
        colours.append([r, g, b])
    return colours


def write_classes(directory: Path | str, classes: list[str], palette: list[list[int]] | None = None,
                  ignore_index: int = 255) -> Path:
    """Write ``directory/classes.yaml`` (class names, RGB palette, ignore index)."""
    import yaml

    palette = palette if palette is not None else default_palette(len(classes))
    if len(palette) != len(classes):
        raise UserInputError(f"palette has {len(palette)} colours for {len(classes)} classes")
    path = Path(directory) / CLASSES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"classes": list(classes), "palette": [list(map(int, c)) for c in palette], "ignore_index": int(ignore_index)}
    path.write_text(yaml.safe_dump(content, sort_keys=False, default_flow_style=None))
    return path


def read_classes(directory: Path | str) -> dict[str, Any]:
    """Read ``directory/classes.yaml`` as ``{"classes": [str], "palette": [[r,g,b]], "ignore_index": int}``.

    ``palette`` defaults to :func:`default_palette` and ``ignore_index`` to 255 when absent.
    """
    import yaml

    path = Path(directory) / CLASSES_FILE
    if not path.is_file():
        raise UserInputError(f"{path} does not exist")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserInputError(f"{path}: invalid YAML ({_one_line(error)})") from error
    if not isinstance(content, dict):
        raise UserInputError(f"{path}: expected a mapping with key 'classes'")
    classes = content.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserInputError(f"{path}: key 'classes' must be a non-empty list of names")
    palette = content.get("palette") or default_palette(len(classes))
    if len(palette) != len(classes) or not all(isinstance(c, list) and len(c) == 3 for c in palette):
        raise UserInputError(f"{path}: key 'palette' must hold one [r, g, b] per class ({len(classes)})")
    ignore_index = content.get("ignore_index", 255)
    if not isinstance(ignore_index, int):
        raise UserInputError(f"{path}: key 'ignore_index' must be an integer")
    return {"classes": classes, "palette": [[int(v) for v in c] for c in palette], "ignore_index": ignore_index}


def read_stats(directory: Path | str) -> dict[str, Any] | None:
    """Read ``directory/stats.json`` (mean/std per channel in raw pixel units) or None if absent."""
    path = Path(directory) / STATS_FILE
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"{path}: invalid stats file ({_one_line(error)})") from error
    if len(mean) != len(std):
        raise UserInputError(f"{path}: 'mean' and 'std' have different lengths")
    stats["mean"], stats["std"] = mean, std
    return stats


def mask_path_for(directory: Path | str, image_path: Path | str) -> Path:
    """The mask that belongs to ``image_path`` in the industrial layout: ``DIR/masks/<stem>.png``
    (sub-folders of ``DIR/images`` are mirrored under ``DIR/masks``)."""
    directory, image_path = Path(directory), Path(image_path)
    try:
        relative = image_path.relative_to(directory / "images")
    except ValueError:
        relative = Path(image_path.name)
    return directory / "masks" / relative.with_suffix(MASK_SUFFIX)
