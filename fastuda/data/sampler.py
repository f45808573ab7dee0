"""Resumable, deterministic iteration order for the training loaders."""

import torch
from torch.utils.data import Sampler


class IterationSampler(Sampler):
    """Infinite draws, resumable at any iteration: draw k is ``order_e[k % n]`` with
    a permutation per epoch e = k // n seeded by (seed, e); ``identity`` yields k itself
    (for a sampler-like dataset such as ``RareClassSampling``)."""

    def __init__(self, n: int, seed: int, start: int = 0, identity: bool = False):
        self.n, self.seed, self.start, self.identity = n, seed, start, identity

    def __iter__(self):
        k = self.start
        epoch, order = -1, None
        while True:
            if self.identity:
                yield k
            else:
                if k // self.n != epoch:
                    epoch = k // self.n
                    order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                yield int(order[k % self.n])
            k += 1
