"""Entry points for training code: a dataset by name, and its DataLoader."""

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from functools import partial

from .acdc import CONDITIONS, acdc
from .bdd100k import bdd100k
from .cityscapes import cityscapes
from .dark_zurich import dark_zurich
from .dataset import SegmentationDataset
from .folder import folder_dataset
from .gta import gta5
from .mapillary import mapillary
from .synthia import synthia
from .transforms import Pipeline

_BUILDERS = {
    "gta": gta5, "gta5": gta5, "synthia": synthia, "cityscapes": cityscapes,
    "acdc": acdc, **{f"acdc_{c}": partial(acdc, conditions=c) for c in CONDITIONS},
    "dark_zurich": dark_zurich, "darkzurich": dark_zurich,
    "bdd100k": bdd100k, "bdd": bdd100k, "mapillary": mapillary,
}  # fmt: skip
_OPTIONS = {"acdc": ("conditions", "layout"), **{f"acdc_{c}": ("layout",) for c in CONDITIONS},
            "dark_zurich": ("time",), "darkzurich": ("time",)}  # fmt: skip
# The names configs and command lines use ("acdc" is all four conditions, "acdc_night" one).
DATASET_NAMES = ("gta", "synthia", "cityscapes", "acdc", *(f"acdc_{c}" for c in CONDITIONS), "dark_zurich",
                 "bdd100k", "mapillary", "folder")  # fmt: skip


def build_dataset(
    name: str, root, split: str = "train", pipeline: Pipeline | None = None, seed: int | None = None, **options
) -> SegmentationDataset:
    """The dataset ``name`` (one of ``DATASET_NAMES``) at ``root``.

    "acdc" reads all four conditions, "acdc_fog" / "acdc_night" / "acdc_rain" /
    "acdc_snow" one; "dark_zurich" is its night folder (the published target).
    ``options``: ACDC's ``conditions`` and ``layout``, Dark Zurich's ``time`` (see
    ``acdc()``, ``dark_zurich()``), and for "folder" ``classes=[...]`` and the other
    options of ``folder_dataset`` (whose ``split`` must be "train").
    ``pipeline``: e.g. ``preset_pipeline("daformer", "gta")``; None returns the
    decoded image and label as stored.
    """
    key = name.lower()
    if key == "folder":
        if split != "train":
            raise ValueError(f"a folder dataset has one split, 'train'; got split={split!r} (point root at the split)")
        return folder_dataset(root, pipeline=pipeline, seed=seed, **options)
    if key not in _BUILDERS:
        raise ValueError(f"dataset name must be one of {DATASET_NAMES}, got {name!r}")
    if unexpected := sorted(set(options) - set(_OPTIONS.get(key, ()))):
        raise TypeError(f"unexpected options for {name}: {unexpected}; it takes {list(_OPTIONS.get(key, ()))}")
    return _BUILDERS[key](root, split=split, pipeline=pipeline, seed=seed, **options)


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
