"""fastuda.data: GTA5, Synthia, Cityscapes, ACDC, Dark Zurich, BDD100K and Mapillary as released, your own folders, the
published pipelines, and rare-class-sampling statistics.

    from fastuda.data import build_dataset, make_loader, preset_pipeline

    source = build_dataset("gta", "data/gta", pipeline=preset_pipeline("daformer", "gta"))
    target = build_dataset("cityscapes", "data/cityscapes", pipeline=preset_pipeline("daformer", "cityscapes"))
    loader = make_loader(source, batch_size=2, workers=4, seed=0)

Conversion (optional; writes train-id labels and the RCS statistics):
``python -m fastuda.data.convert {gta,synthia,cityscapes,mapillary} ROOT``.
"""

from .acdc import acdc
from .bdd100k import bdd100k
from .cityscapes import cityscapes
from .dark_zurich import dark_zurich
from .dataset import SegmentationDataset
from .folder import folder_dataset
from .gta import gta5
from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16
from .loader import DATASET_NAMES, build_dataset, make_loader
from .mapillary import mapillary
from .stats import (
    SampleStats,
    compute_class_stats,
    rcs_probabilities,
    read_class_stats,
    samples_with_class,
    write_class_stats,
)
from .published import PUBLISHED_PIPELINES, PublishedPipeline, preset_pipeline, published_pipeline
from .synthia import synthia
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Pipeline, keep_ratio_size, normalize

__all__ = [
    "CITYSCAPES_CLASSES",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "PUBLISHED_PIPELINES",
    "SYNTHIA_13",
    "SYNTHIA_16",
    "Pipeline",
    "PublishedPipeline",
    "SampleStats",
    "SegmentationDataset",
    "acdc",
    "bdd100k",
    "build_dataset",
    "cityscapes",
    "dark_zurich",
    "compute_class_stats",
    "folder_dataset",
    "gta5",
    "keep_ratio_size",
    "make_loader",
    "mapillary",
    "normalize",
    "preset_pipeline",
    "published_pipeline",
    "rcs_probabilities",
    "read_class_stats",
    "samples_with_class",
    "synthia",
    "write_class_stats",
]
