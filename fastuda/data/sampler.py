"""Resumable, deterministic iteration order for the training loaders, and the draw key.

Every random choice of a training pipeline (crop offsets, cat_max_ratio re-draws, flip,
RCS class / file / re-crops) comes from ``draw_generator(seed, stream, k)``: a pure
function of the dataset's seed and the global draw index k (k = iteration x world batch
+ position in it). So a draw is the same in any DataLoader worker, with any number of
workers, and after a resume.
"""

import zlib

import numpy as np
import torch
from torch.utils.data import Sampler


class Draw(int):
    """A file index (the int value) that carries its global draw index ``key``.

    An int, so any map-style dataset can be indexed with it; ``SegmentationDataset``
    seeds its pipeline from ``key`` (see ``draw_generator``)."""

    def __new__(cls, index: int, key: int):
        draw = super().__new__(cls, index)
        draw.key = key
        return draw

    def __reduce__(self):  # to DataLoader workers, key included
        return Draw, (int(self), self.key)

    def __repr__(self) -> str:
        return f"Draw(index={int(self)}, key={self.key})"


def draw_generator(seed: int | None, stream: str, key: int) -> torch.Generator:
    """A CPU generator seeded by (``seed`` (None counts as 0), ``stream``, ``key``), mixed by
    NumPy's SeedSequence so neighbouring keys and seeds give unrelated streams."""
    entropy = [(seed or 0) % (1 << 64), zlib.crc32(stream.encode()), key % (1 << 64)]
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(high) << 31) ^ int(low))


class IterationSampler(Sampler):
    """Infinite draws, resumable at any draw: draw k (k = start, start + 1, ...) is file
    ``order_e[k % n]`` with a permutation per epoch e = k // n seeded by (seed, e), yielded
    as ``Draw(file, key=k)``; ``identity`` yields k itself (for a dataset that maps the
    draw index to its own draw, such as ``RareClassSampling``)."""

    def __init__(self, n: int, seed: int, start: int = 0, identity: bool = False):
        self.n, self.seed, self.start, self.identity = n, seed, start, identity

    def _keys(self):
        """The global draw indices this sampler serves, in order."""
        k = self.start
        while True:
            yield k
            k += 1

    def __iter__(self):
        epoch, order = -1, None
        for k in self._keys():
            if self.identity:
                yield k
                continue
            if k // self.n != epoch:
                epoch = k // self.n
                order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            yield Draw(int(order[k % self.n]), k)
