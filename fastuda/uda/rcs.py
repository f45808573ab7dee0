"""Rare class sampling (DAFormer Sec. 3.3), as a dataset wrapper.

Published (mmseg/datasets/uda_dataset.py): f_c is class c's share of the
source pixels (``sample_class_stats.json``), P(c) = softmax((1 - f_c) / T)
with T = 0.01. A draw picks c ~ P, then uniformly one of the files holding more
than 3000 pixels of c, runs the training pipeline on it and, while the crop
holds <= 3000 x min_crop_ratio pixels of c, runs the pipeline again (up to 10
times; the last crop is kept). min_crop_ratio is 0.5 for DAFormer, 2.0 for
HRDA / MIC.

``RareClassSampling(dataset, ...)[k]`` is draw ``k`` (the global draw index the
training sampler yields): one generator seeded by (``seed``, k) picks the class
and the file and then runs every pipeline pass, re-crops included
(``dataset.item(file, generator)``), so the k-th draw is the same in any worker,
for any number of workers, and after a resume. A dataset without ``item``
(in memory, no random pipeline) is indexed plainly. The class statistics are
read from the dataset root when the converter wrote them, else computed in memory.
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fastuda.data.dataset import SegmentationDataset
from fastuda.data.sampler import draw_generator
from fastuda.data.stats import (SampleStats, class_counts, compute_class_stats, rcs_probabilities, read_class_stats,
                                samples_with_class)  # fmt: skip

RETRIES = 10


def dataset_class_stats(dataset, num_classes: int) -> tuple[list[SampleStats], dict[str, int] | None]:
    """The statistics of ``dataset`` and, for in-memory datasets, {file: index}.

    A ``SegmentationDataset`` uses ``sample_class_stats.json`` at its root when
    present, else ``compute_class_stats``. Any other dataset must offer
    ``read_label(i)`` (uint8 / int (H, W) train ids); entries are named by index.
    """
    if isinstance(dataset, SegmentationDataset):
        if (Path(dataset.root) / "sample_class_stats.json").is_file():
            return read_class_stats(dataset.root, dataset.name), None
        return compute_class_stats(dataset, workers=0, progress=False), None
    counts = (class_counts(np.asarray(dataset.read_label(i)), num_classes) for i in range(len(dataset)))
    stats = [SampleStats(str(i), c) for i, c in enumerate(counts)]
    return stats, {s.file: i for i, s in enumerate(stats)}


class RareClassSampling(Dataset):
    """Wraps a source dataset; item k is an RCS draw (see the module doc)."""

    def __init__(self, dataset, num_classes: int, temperature: float = 0.01, min_pixels: int = 3000,
                 min_crop_ratio: float = 0.5, seed: int = 0, stats: list[SampleStats] | None = None):  # fmt: skip
        self.dataset = dataset
        self.min_pixels = min_pixels
        self.min_crop_ratio = min_crop_ratio
        self.seed = seed
        index = None
        if stats is None:
            stats, index = dataset_class_stats(dataset, num_classes)
        self.classes, self.probs = rcs_probabilities(stats, temperature)
        if index is None:
            self.files = samples_with_class(stats, dataset, min_pixels)
        else:
            self.files = {}
            for s in stats:
                for c, n in s.counts.items():
                    self.files.setdefault(c, [])
                    if n > min_pixels:
                        self.files[c].append(index[s.file])
            if empty := [c for c in self.classes if not self.files.get(c)]:
                raise ValueError(f"no sample has more than {min_pixels} pixels of class {empty}; lower rcs.min_pixels")

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, k: int) -> tuple[int, int]:
        """(class, file index) of draw ``k``."""
        return self._draw(k)[:2]

    def _draw(self, k: int) -> tuple[int, int, torch.Generator]:
        """(class, file, the generator the pipeline passes of draw ``k`` continue from)."""
        g = draw_generator(self.seed, "rcs", k)
        c = self.classes[int(torch.multinomial(self.probs, 1, generator=g))]
        files = self.files[c]
        return c, files[int(torch.randint(len(files), (), generator=g))], g

    def __getitem__(self, k: int) -> dict:
        c, index, g = self._draw(int(k))
        fetch = getattr(self.dataset, "item", None)
        for _ in range(RETRIES):
            sample = fetch(index, g) if fetch is not None else self.dataset[index]
            if int((sample["label"] == c).sum()) > self.min_pixels * self.min_crop_ratio:
                break
        return sample
