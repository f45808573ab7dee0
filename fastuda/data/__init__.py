"""fastuda.data: GTA5, Synthia, Cityscapes, ACDC, Dark Zurich, BDD100K and Mapillary as released, your own folders, the
published pipelines, and rare-class-sampling statistics.

    from fastuda.data import build_dataset, make_loader, preset_pipeline

    source = build_dataset("gta", "data/gta", pipeline=preset_pipeline("daformer", "gta"))
    target = build_dataset("cityscapes", "data/cityscapes", pipeline=preset_pipeline("daformer", "cityscapes"))
    loader = make_loader(source, batch_size=2, workers=4, seed=0)

Conversion (optional; writes train-id labels and the RCS statistics):
``python -m fastuda.data.convert {gta,synthia,cityscapes,mapillary} ROOT``.
"""

import importlib
import importlib.util
import sys
import types

# Each submodule and the public names it defines. They are imported on first use, so that
# `python -m fastuda.data.convert` checks its arguments before torch is imported, as the other
# command lines do (issue 20 #9); `from fastuda.data import X` works as with eager imports.
_EXPORTS = {
    "acdc": ["acdc"],
    "bdd100k": ["bdd100k"],
    "cityscapes": ["cityscapes"],
    "dark_zurich": ["dark_zurich"],
    "dataset": ["SegmentationDataset"],
    "folder": ["folder_dataset"],
    "gta": ["gta5"],
    "labels": ["CITYSCAPES_CLASSES", "IGNORE_INDEX", "NUM_CLASSES", "SYNTHIA_13", "SYNTHIA_16"],
    "loader": ["DATASET_NAMES", "build_dataset", "make_loader"],
    "mapillary": ["mapillary"],
    "stats": ["SampleStats", "compute_class_stats", "rcs_probabilities", "read_class_stats", "samples_with_class",
              "write_class_stats"],
    "published": ["PUBLISHED_PIPELINES", "PublishedPipeline", "preset_pipeline", "published_pipeline"],
    "synthia": ["synthia"],
    "transforms": ["IMAGENET_MEAN", "IMAGENET_STD", "Pipeline", "keep_ratio_size", "normalize"],
}  # fmt: skip
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _SOURCE:
        value = getattr(importlib.import_module(f"{__name__}.{_SOURCE[name]}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule, as `fastuda.data.labels`
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value):
        # Six loaders share their submodule's name (fastuda.data.acdc defines acdc()). Importing
        # such a submodule sets the package attribute of that name to the module; the loader
        # stays there instead (__getattr__ finds it), as with eager imports.
        if name in _SOURCE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
