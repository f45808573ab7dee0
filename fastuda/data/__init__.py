"""fastuda.data: GTA5, Synthia and Cityscapes as released, your own folders, the
published pipelines, and rare-class-sampling statistics.

    from fastuda.data import build_dataset, make_loader, preset_pipeline

    source = build_dataset("gta", "data/gta", pipeline=preset_pipeline("daformer", "gta"))
    target = build_dataset("cityscapes", "data/cityscapes", pipeline=preset_pipeline("daformer", "cityscapes"))
    loader = make_loader(source, batch_size=2, workers=4, seed=0)

Conversion (optional; writes train-id labels and the RCS statistics):
``python -m fastuda.data.convert {gta,synthia,cityscapes} ROOT``.
"""

from .cityscapes import cityscapes
from .dataset import SegmentationDataset
from .folder import folder_dataset
from .gta import gta5
from .labels import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16
from .loader import DATASET_NAMES, build_dataset, make_loader
from .stats import (
    SampleStats,
    compute_class_stats,
    rcs_probabilities,
    read_class_stats,
    samples_with_class,
    write_class_stats,
)
from .synthia import synthia
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Pipeline, keep_ratio_size, normalize, preset_pipeline

__all__ = [
    "CITYSCAPES_CLASSES",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "SYNTHIA_13",
    "SYNTHIA_16",
    "Pipeline",
    "SampleStats",
    "SegmentationDataset",
    "build_dataset",
    "cityscapes",
    "compute_class_stats",
    "folder_dataset",
    "gta5",
    "keep_ratio_size",
    "make_loader",
    "normalize",
    "preset_pipeline",
    "rcs_probabilities",
    "read_class_stats",
    "samples_with_class",
    "synthia",
    "write_class_stats",
]
