"""Crop-first reads: one window of an image without decoding (or converting) the rest.

:func:`open_window` opens a file (or the bytes of a shard member) and returns an
:class:`ImageWindows`: the image's ``(C, H, W)`` shape and dtype from its header, and
:meth:`ImageWindows.read` giving the window ``(C, h, w)`` in the file's own integer dtype. How a
window is read depends on how the file stores its pixels:

* ``memmap``: uncompressed, contiguous TIFF (what tifffile and most cameras write): the window is
  cut from a read-only memory map of the file (bytes in memory: a zero-copy ``numpy.frombuffer``
  view), so only its rows are touched. The file's layout (offsets, shapes) is parsed once per
  process and cached by path, modification time and size;
* ``segments``: tiled or striped TIFF, compressed or not: only the tiles / strips that meet the
  window are read and decoded (tifffile's ``TiffPage.decode``);
* ``full``: any other layout (PNG, JPEG, multi-page or odd TIFFs): the whole image is decoded once
  (:func:`mae_dbp.data.io.read_image`) and windows are cut from it.

A pyramidal TIFF (reduced-resolution levels in SubIFDs, as ``mae-dbp data pyramid``, OME-TIFF and
libvips write them) gives one reader per level in :attr:`ImageWindows.levels`, finest first;
:meth:`ImageWindows.level_for` picks the coarsest level on which a crop box still spans enough
pixels and maps the box onto it.

``bytes_read`` counts the bytes the reader asks for (the window's own bytes for ``memmap``, the
stored size of the segments for ``segments``, the whole file for ``full``): with the page cache
warm, this is the memory a read moves. ``pages_read`` counts what a read from disk or a cold page
cache moves at least: the distinct 4 KB pages the window's rows touch (``memmap``; rows of a
contiguous image are whole pages apart, so a window about half the image's width or more touches
every page of its rows), else the same as ``bytes_read``. The kernel's own counters
(``/proc/self/io``) see neither page cache hits nor memory-mapped reads. Every failure is a :class:`UserInputError` naming the file.
"""

from __future__ import annotations

import io
import math
import mmap
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mae_dbp.data.io import TIFF_SUFFIXES, _one_line, _read_pil, _read_tiff, check_finite, read_image
from mae_dbp.errors import UserInputError


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
PAGE = mmap.PAGESIZE  # bytes the page cache moves at a time


class ImageWindows:
    """Windows of one image: ``shape`` ``(C, H, W)``, ``dtype``, ``kind`` and :meth:`read`."""

    kind = "full"

    def __init__(self, name: str, array: np.ndarray, nbytes: int) -> None:
        self.name, self._array = name, array  # (C, H, W) or (H, W, C) view, see _chw
        self.shape: tuple[int, int, int] = tuple(int(v) for v in self._chw(array).shape)
        self.dtype = array.dtype
        self._bytes = self._pages_bytes = nbytes
        self.levels: list[ImageWindows] = []  # reduced-resolution levels, finest first (pyramidal TIFF)

    @property
    def bytes_read(self) -> int:
        """Bytes asked of the file so far, this level and its reduced levels together."""
        return self._bytes + sum(level.bytes_read for level in self.levels)

    @property
    def pages_read(self) -> int:
        """Bytes of the memory pages those reads touched (see the module docstring)."""
        return self._pages_bytes + sum(level.pages_read for level in self.levels)

    def level_for(self, top: int, left: int, height: int, width: int,
                  min_side: float) -> tuple["ImageWindows", tuple[int, int, int, int]]:
        """The coarsest level on which the box ``(top, left, height, width)`` (px of this level)
        still spans at least ``min_side`` px in both directions, and the box on that level (edges
        rounded to its pixel grid: they move by less than half a pixel there). Without such a
        level: this reader and the box unchanged."""
        chosen, box = self, (top, left, height, width)
        _, full_h, full_w = self.shape
        for level in self.levels:
            _, h, w = level.shape
            sy, sx = h / full_h, w / full_w
            if height * sy < min_side or width * sx < min_side:
                break
            t, l = min(h - 1, math.floor(top * sy + 0.5)), min(w - 1, math.floor(left * sx + 0.5))
            b, r = min(h, math.floor((top + height) * sy + 0.5)), min(w, math.floor((left + width) * sx + 0.5))
            chosen, box = level, (t, l, max(1, b - t), max(1, r - l))
        return chosen, box

    @staticmethod
    def _chw(array: np.ndarray) -> np.ndarray:
        return array

    def _cut(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        return self._array[:, top:top + height, left:left + width]

    def close(self) -> None:
        """Release the file (segment readers keep it open between windows)."""

    def __enter__(self) -> "ImageWindows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The window rows ``top:top+height``, columns ``left:left+width`` (px) as ``(C, h, w)``
        in the file's dtype (possibly a strided view; channels may be the fastest axis)."""
        _, h, w = self.shape
        if not (0 <= top and 0 <= left and 0 < height and 0 < width and top + height <= h and left + width <= w):
            raise ValueError(f"window {top}+{height} x {left}+{width} outside the {h}x{w} image")
        try:
            return self._cut(top, left, height, width)
        except UserInputError:
            raise
        except Exception as error:  # noqa: BLE001 - a window that cannot be read is a bad file
            raise UserInputError(f"{self.name}: cannot read the window at row {top}, column {left} "
                                 f"({height}x{width} px): {_one_line(error)}") from error


class _MemmapWindows(ImageWindows):
    """Contiguous uncompressed TIFF: windows cut from a memory map (HWC, CHW or HW on disk)."""

    kind = "memmap"

    def __init__(self, name: str, array: np.ndarray, axes: str, offset: int = 0) -> None:
        self._hwc = axes.endswith("S") and array.ndim == 3
        self._offset = offset  # of the array's first byte in the file
        array = array[None] if array.ndim == 2 else array
        super().__init__(name, array, 0)

    def _pages(self, top: int, left: int, height: int, width: int) -> int:
        """Bytes of the distinct memory pages that the window's rows touch (every channel plane's
        rows for CHW); rows narrower than a page share pages."""
        array, item = self._array, self._array.dtype.itemsize
        row = array.strides[0] if self._hwc else array.strides[1]
        pixel = array.strides[1] if self._hwc else item
        planes = [0] if self._hwc else [c * array.strides[0] for c in range(array.shape[0])]
        starts = (self._offset + np.add.outer(np.asarray(planes, np.int64), (top + np.arange(height, dtype=np.int64)) * row)
                  + left * pixel).ravel()
        first, last = starts // PAGE, (starts + width * pixel - 1) // PAGE  # increasing in both
        shared = np.maximum(0, np.minimum(last[:-1], last[1:]) - first[1:] + 1)  # with the row before
        return int((last - first + 1).sum() - shared.sum()) * PAGE

    def _chw(self, array: np.ndarray) -> np.ndarray:
        return np.moveaxis(array, -1, 0) if self._hwc else array

    def _cut(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        self._pages_bytes += self._pages(top, left, height, width)
        if self._hwc:
            window = self._array[top:top + height, left:left + width]
            self._bytes += window.nbytes
            return np.moveaxis(window, -1, 0)
        window = self._array[:, top:top + height, left:left + width]
        self._bytes += window.nbytes
        return window


class _SegmentWindows(ImageWindows):
    """Tiled or striped TIFF page: only the segments that meet a window are read and decoded."""

    kind = "segments"

    def __init__(self, name: str, tif, page, owner: bool = True) -> None:  # tifffile.TiffFile, .TiffPage
        self._tif, self._page, self._owner = tif, page, owner  # owner: close() closes the file
        self._planes = page.samplesperpixel if page.planarconfig == 2 else 1
        self._samples = page.samplesperpixel
        self.name, self.dtype, self._bytes, self._pages_bytes, self.levels = name, np.dtype(page.dtype), 0, 0, []
        self.shape = (self._samples, int(page.imagelength), int(page.imagewidth))
        if page.is_tiled:
            self._seg_h, self._seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self._seg_h, self._seg_w = int(page.rowsperstrip), int(page.imagewidth)
        self._rows = math.ceil(self.shape[1] / self._seg_h)
        self._cols = math.ceil(self.shape[2] / self._seg_w)
        if len(page.dataoffsets) != self._planes * self._rows * self._cols:
            raise ValueError(f"{len(page.dataoffsets)} segments for a {self._rows}x{self._cols} grid")

    def _cut(self, top: int, left: int, height: int, width: int) -> np.ndarray:
        page, out = self._page, np.empty((height, width, self._samples), self.dtype)
        rows = range(top // self._seg_h, (top + height - 1) // self._seg_h + 1)
        cols = range(left // self._seg_w, (left + width - 1) // self._seg_w + 1)
        indices = [(p * self._rows + r) * self._cols + c for p in range(self._planes) for r in rows for c in cols]
        offsets = [page.dataoffsets[i] for i in indices]
        counts = [page.databytecounts[i] for i in indices]
        size = self._tif.filehandle.size
        if any(o + n > size for o, n in zip(offsets, counts)):
            raise ValueError("the file ends before the window's data (truncated?)")
        self._bytes += int(sum(counts))
        self._pages_bytes += int(sum(counts))
        for data, index in self._tif.filehandle.read_segments(offsets, counts, indices, sort=True):
            segment, (plane, _, y, x, _), _ = page.decode(data, index, jpegtables=page.jpegtables)
            if segment is None:
                raise ValueError(f"segment {index} is empty")
            y0, x0 = max(y, top), max(x, left)
            y1, x1 = min(y + segment.shape[1], top + height), min(x + segment.shape[2], left + width)
            channels = slice(plane, plane + 1) if self._planes > 1 else slice(None)
            out[y0 - top:y1 - top, x0 - left:x1 - left, channels] = segment[0, y0 - y:y1 - y, x0 - x:x1 - x]
        return np.moveaxis(out, -1, 0)

    def close(self) -> None:
        if self._owner:
            self._tif.close()


class _Plane(NamedTuple):
    """One resolution level stored contiguously and uncompressed: where and how (a cached layout)."""

    offset: int
    shape: tuple[int, ...]
    dtype: str  # with byte order, e.g. "<u2"
    axes: str


def _contiguous_planes(tif) -> tuple[_Plane, ...] | None:
    """Level 0 and every following reduced level of ``tif``'s first series that is contiguous and
    uncompressed with level 0's axes, or None when level 0 is not (then segments or a full read)."""
    series = tif.series[0]
    planes = []
    for level in series.levels:
        if level.dataoffset is None or level.keyframe.compression != 1 or level.axes != series.axes:
            break
        dtype = np.dtype(level.dtype).newbyteorder(tif.byteorder)
        planes.append(_Plane(int(level.dataoffset), tuple(int(v) for v in level.shape), dtype.str, level.axes))
    return tuple(planes) or None


def _integer_image(series) -> bool:
    return np.issubdtype(np.dtype(series.dtype), np.integer) and len(series.shape) in (2, 3)


@lru_cache(maxsize=1 << 16)
def _file_planes(path: str, mtime_ns: int, size: int) -> tuple[_Plane, ...] | None:
    """The contiguous levels of the TIFF at ``path`` (parsed once per process and file version)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _contiguous_planes(tif) if _integer_image(tif.series[0]) else None


def _plane_readers(name: str, buffer, planes: tuple[_Plane, ...]) -> ImageWindows:
    """Zero-copy readers of ``planes`` in ``buffer`` (bytes or a memory map), levels attached."""
    readers = [_MemmapWindows(name, np.frombuffer(buffer, np.dtype(p.dtype), math.prod(p.shape), p.offset)
                              .reshape(p.shape), p.axes, p.offset) for p in planes]
    readers[0].levels = readers[1:]
    return readers[0]


def _open_tiff(name: str, source: Path | bytes) -> ImageWindows | None:
    """A memmap or segment reader (with the file's reduced levels) for a one-page integer TIFF,
    or None (use a full read)."""
    import tifffile

    if isinstance(source, Path):
        stat = source.stat()
        planes = _file_planes(str(source), stat.st_mtime_ns, stat.st_size)
        if planes is not None:
            with open(source, "rb") as file:
                return _plane_readers(name, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), planes)
    tif = tifffile.TiffFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    series = tif.series[0]
    if not _integer_image(series):
        tif.close()
        return None
    planes = _contiguous_planes(tif) if isinstance(source, bytes) else None
    if planes is not None:
        tif.close()
        return _plane_readers(name, source, planes)
    if len(series.pages) == 1 and series.axes in ("YX", "YXS", "SYX"):
        reader = _SegmentWindows(name, tif, series.keyframe)
        reader.levels = [_SegmentWindows(name, tif, level.keyframe, owner=False) for level in series.levels[1:]
                         if len(level.pages) == 1 and level.axes == series.axes]
        return reader
    tif.close()
    return None


def open_window(source: Path | str | bytes, channels: int | None = None, name: str | None = None) -> ImageWindows:
    """An :class:`ImageWindows` for a file path, or for a TIFF / PNG / JPEG file's ``bytes``
    (then ``name`` names it in messages). ``channels``: the required channel count."""
    name = str(name if name is not None else source)
    path = None if isinstance(source, bytes) else Path(source)
    reader: ImageWindows | None = None
    try:
        if path is not None and not path.is_file():
            raise UserInputError(f"{path}: cannot read image (file does not exist)")
        suffix = Path(name).suffix.lower()
        tiff = source[:4] in TIFF_MAGIC if isinstance(source, bytes) else suffix in TIFF_SUFFIXES
        if tiff:
            reader = _open_tiff(name, source if isinstance(source, bytes) else path)
        if reader is None:
            if path is not None:
                array, nbytes = read_image(path, finite=False), path.stat().st_size
            else:
                decode = _read_tiff if tiff else _read_pil
                array, nbytes = decode(io.BytesIO(source)), len(source)
            check_finite(name, array)
            reader = ImageWindows(name, array, nbytes)
    except UserInputError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file
        raise UserInputError(f"{name}: cannot read image ({_one_line(error)})") from error
    if channels is not None and reader.shape[0] != channels:
        raise UserInputError(f"{name}: expected {channels} channels, found {reader.shape[0]}")
    if min(reader.shape) == 0:
        raise UserInputError(f"{name}: cannot read image (empty image {reader.shape})")
    return reader

