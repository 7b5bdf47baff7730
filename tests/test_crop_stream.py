"""k crops per read: the shuffle buffer spreads an image's crops over batches, every image is read
once per epoch, ranks see disjoint images and step together, and an epoch depends only on (seed, epoch)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mae_dbp.config import DataConfig
from mae_dbp.data.crops import CropFirst
from mae_dbp.data.dataset import train_val_datasets
from mae_dbp.data.io import write_image
from mae_dbp.data.stream import CropStream, StreamPlan
from mae_dbp.errors import UserInputError

BATCH = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    for i in range(24):
        write_image(root / f"img{i:02d}.tif", rng.integers(0, 65535, (2, 40, 48), dtype=np.uint16))
    return sorted(root.glob("*.tif"))


def _stream(paths, k: int = 4, buffer: int = 0, seed: int = 0, rank: int = 0, world: int = 1) -> CropStream:
    stream = CropStream(CropFirst(8, [32768.0] * 2, [16384.0] * 2, channels=2, scale=(0.2, 0.6)), 2, k=k,
                        paths=paths, buffer=buffer)
    stream.configure(StreamPlan(BATCH, rank, world, seed))
    return stream


def _batches(stream: CropStream, epoch: int = 1, workers: int = 0) -> list[tuple[torch.Tensor, list[int]]]:
    stream.set_epoch(epoch)
    return [(images, index.tolist()) for (images, _), index in DataLoader(stream, batch_size=BATCH, num_workers=workers)]


def test_every_image_gives_k_crops_per_epoch_spread_over_batches(folder):
    batches = _batches(_stream(folder, k=4))
    assert len(batches) == len(_stream(folder, k=4)) // BATCH == 24 * 4 // BATCH
    seen = Counter(i for _, index in batches for i in index)
    assert seen == Counter({i: 4 for i in range(24)})  # an epoch reads each image once, k crops each
    distinct = [len(set(index)) for _, index in batches]
    assert np.mean(distinct) >= 0.6 * BATCH and max(Counter(batches[0][1]).values()) <= 4
    # control: without a buffer a batch is two images' four crops each
    plain = _batches(_stream(folder, k=4, buffer=1))
    assert [len(set(index)) for _, index in plain] == [2] * len(plain)
    crops = torch.cat([images for images, _ in batches])
    assert crops.shape == (24 * 4, 2, 8, 8) and len({tuple(c.flatten()[:6].tolist()) for c in crops}) == 96


def test_an_epoch_depends_only_on_seed_and_epoch(folder):
    folder = folder[:12]
    first = _batches(_stream(folder, seed=1), epoch=3)
    again = _batches(_stream(folder, seed=1), epoch=3)  # a resumed run: a fresh stream starting at epoch 3
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    stream = _stream(folder, seed=1)
    _batches(stream, epoch=1), _batches(stream, epoch=2)
    after = _batches(stream, epoch=3)  # one that ran epochs 1 and 2 first
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, after))
    other_epoch = _batches(_stream(folder, seed=1), epoch=4)
    other_seed = _batches(_stream(folder, seed=2), epoch=3)
    assert first[0][1] != other_epoch[0][1] and first[0][1] != other_seed[0][1]


def test_ranks_take_disjoint_images_and_the_same_number_of_batches(folder):
    paths = folder[:23]  # 23 images for 2 ranks: 11 each, the last one waits for the next epoch
    ranks = [_batches(_stream(paths, k=2, rank=r, world=2), epoch=5) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 11 * 2 // BATCH
    images = [{i for _, index in batches for i in index} for batches in ranks]
    assert not images[0] & images[1]


@pytest.mark.slow
def test_workers_split_the_images_and_keep_the_batch_count(folder):
    batches = _batches(_stream(folder, k=4), workers=2)
    assert len(batches) == 24 * 4 // BATCH
    assert Counter(i for _, index in batches for i in index) == Counter({i: 4 for i in range(24)})


def test_crops_per_image_builds_a_stream_and_k_below_one_is_refused(folder):
    data = DataConfig(root=str(folder[0].parent), val_fraction=0.25, mean=[32768.0], std=[16384.0],
                      crops_per_image=3)
    train, val = train_val_datasets(data, channels=2, img_size=8)
    assert isinstance(train, CropStream) and train.k == 3 and train.images == 18 and len(val) == 6
    with pytest.raises(UserInputError, match="data.crops_per_image: expected an int >= 1, got 0"):
        DataConfig(crops_per_image=0)
    with pytest.raises(UserInputError, match="every process needs at least one"):
        _stream(folder[:1], world=2)
