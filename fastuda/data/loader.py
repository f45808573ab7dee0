"""Entry points for training code: a dataset by name, and its DataLoader."""

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .cityscapes import cityscapes
from .dataset import SegmentationDataset
from .folder import folder_dataset
from .gta import gta5
from .synthia import synthia
from .transforms import Pipeline

_BUILDERS = {"gta": gta5, "gta5": gta5, "synthia": synthia, "cityscapes": cityscapes}
DATASET_NAMES = ("gta", "synthia", "cityscapes", "folder")


def build_dataset(
    name: str, root, split: str = "train", pipeline: Pipeline | None = None, seed: int | None = None, **folder_options
) -> SegmentationDataset:
    """The dataset ``name`` ("gta", "synthia", "cityscapes" or "folder") at ``root``.

    ``pipeline``: e.g. ``preset_pipeline("daformer", "gta")``; None returns the
    decoded image and label as stored. "folder" takes ``classes=[...]`` and the
    other options of ``folder_dataset``; its ``split`` must be "train".
    """
    key = name.lower()
    if key == "folder":
        if split != "train":
            raise ValueError(f"a folder dataset has one split, 'train'; got split={split!r} (point root at the split)")
        return folder_dataset(root, pipeline=pipeline, seed=seed, **folder_options)
    if folder_options:
        raise TypeError(f"unexpected options for {name}: {sorted(folder_options)}")
    if key not in _BUILDERS:
        raise ValueError(f"dataset name must be one of {DATASET_NAMES}, got {name!r}")
    return _BUILDERS[key](root, split=split, pipeline=pipeline, seed=seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int = 4,
    shuffle: bool = True,
    sampler: Sampler | None = None,
    drop_last: bool = True,
    seed: int | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader set up for training throughput.

    ``workers`` decoding processes that persist across epochs (no re-fork, and
    each keeps its own random stream), ``pin_memory`` when CUDA is available
    (so ``.to("cuda", non_blocking=True)`` overlaps the copy), ``prefetch_factor``
    batches queued per worker. ``seed`` seeds the shuffle order and the
    workers' crop/flip streams (reproducible for a fixed worker count).
    ``sampler`` (e.g. rare class sampling) replaces shuffling.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        generator=generator,
    )
