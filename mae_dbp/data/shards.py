"""WebDataset tar shards of raw images: the manifest, the shard list and the samples of a shard.

``mae-dbp data shard FOLDER --out DIR`` (``data_tools/shard.py``) writes::

    DIR/shard-00000.tar ...   one sample per image (or tile): <key>.tiff (the raw pixels as an
                              uncompressed contiguous TIFF, the file's own dtype) + <key>.json
    DIR/manifest.json         {"format", "samples", "channels", "dtype", "tile",
                               "shards": [{"name", "count", "keys"}, ...]}

``data.shards`` is that DIR, or a brace pattern / URL of the shards (``DIR/shard-{00000..00009}.tar``,
``https://host/wb/shard-{00000..00099}.tar``) with ``manifest.json`` beside them. Shards are read
sequentially through the ``webdataset`` package (``tarfile_samples``: local files, ``pipe:``
commands and URLs). A shard that ends early, or holds other samples than its manifest says, is one
:class:`UserInputError` naming it.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mae_dbp.data.io import _one_line
from mae_dbp.errors import UserInputError

MANIFEST = "manifest.json"
FORMAT = "mae-dbp shards 1"
IMAGE_EXT, META_EXT = "tiff", "json"


@dataclass(frozen=True)
class Shard:
    """One tar shard: where it is (``url``: a path or URL), its sample count and keys."""

    url: str
    count: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ShardSet:
    """The shards of ``data.shards`` with the manifest's totals."""

    spec: str
    shards: tuple[Shard, ...]
    channels: int
    dtype: str
    tile: int | None

    @property
    def samples(self) -> int:
        return sum(s.count for s in self.shards)

    def names(self) -> list[str]:
        """``<shard url>:<key>`` of every sample, in manifest order (what a message names)."""
        return [f"{s.url}:{k}" for s in self.shards for k in s.keys]


def webdataset():
    """The ``webdataset`` module, or one line saying how to install it (the ``data`` extra)."""
    try:
        import webdataset as wds
    except ImportError as error:
        raise UserInputError("data.shards / mae-dbp data shard need the webdataset package: "
                             "pip install 'mae-dbp[data]'") from error
    return wds


def _read_text(url: str) -> str:
    with webdataset().gopen(url, "rb") as stream:
        return stream.read().decode()


def open_shards(spec: str) -> ShardSet:
    """The :class:`ShardSet` of a shard folder or pattern (``data.shards``), from its manifest."""
    webdataset()
    from braceexpand import braceexpand  # a dependency of webdataset

    local = Path(spec)
    if local.is_dir():
        base, urls = str(local), None
    else:
        base, urls = posixpath.dirname(spec), list(braceexpand(spec))
    manifest_url = posixpath.join(base, MANIFEST) if base else MANIFEST
    try:
        manifest = json.loads(_read_text(manifest_url))
        entries = {e["name"]: e for e in manifest["shards"]}
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"data.shards: cannot read {manifest_url} ({_one_line(error)})") from error
    if urls is None:
        urls = [posixpath.join(base, name) for name in entries]
    missing = [u for u in urls if posixpath.basename(u) not in entries]
    if missing:
        raise UserInputError(f"data.shards: {missing[0]} is not listed in {manifest_url}")
    if not urls:
        raise UserInputError(f"data.shards: no shards in {manifest_url}")
    shards = tuple(Shard(u, int(entries[posixpath.basename(u)]["count"]), tuple(entries[posixpath.basename(u)]["keys"]))
                   for u in urls)
    return ShardSet(spec, shards, int(manifest["channels"]), str(manifest["dtype"]), manifest.get("tile"))


def shard_samples(shard: Shard) -> Iterator[tuple[str, bytes]]:
    """``(key, TIFF bytes)`` of each sample of ``shard`` in stored order; a shard that cannot be
    read, ends early or holds other keys than the manifest's is an error naming it."""
    tarfile_samples = webdataset().tariterators.tarfile_samples
    expected = iter(shard.keys)
    seen = 0
    try:
        for sample in tarfile_samples([{"url": shard.url}]):
            key = sample["__key__"]
            if key != next(expected, None) or IMAGE_EXT not in sample:
                raise ValueError(f"sample {seen} is {key!r} with {sorted(k for k in sample if not k.startswith('__'))}, "
                                 f"not the manifest's")
            seen += 1
            yield key, sample[IMAGE_EXT]
    except UserInputError:
        raise
    except Exception as error:  # noqa: BLE001 - tarfile/gopen errors of a damaged shard
        raise UserInputError(f"{shard.url}: cannot read shard after {seen} of {shard.count} samples "
                             f"({_one_line(error)})") from error
    if seen != shard.count:
        raise UserInputError(f"{shard.url}: truncated shard: {seen} of the manifest's {shard.count} samples")
