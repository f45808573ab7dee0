"""The published pipelines' sizes, the one home of each: the training crop, each dataset's
resize, the test windows. Validation (``fastuda.config.validate``), the data pipeline
(``fastuda.data.preset_pipeline``) and inference (``fastuda.runtime.build``, ``Segmenter``)
all read them here.

A new recipe is one row of ``RECIPES``; a new dataset is one row of ``DATASETS`` (its class
count and its resize at DAFormer's and at HRDA's resolution, as in the published
``configs/_base_/datasets/*.py``).
"""

import dataclasses

Size = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A published training recipe (DAFormer ``uda_*_512x512.py``, HRDA / MIC ``uda_*HR_*_1024x1024.py``)."""

    crop: Size  # (h, w) random training crop
    full_resolution: bool  # resize to the dataset's full-resolution size (HRDA) or to half of it (DAFormer)
    # an HRDA model's test (mmseg test_cfg): slide windows (h, w) every stride (mode='slide'), or None: the
    # whole (resized) image through HRDA's two scales, its detail branch slid at hr_crop / 2 (mode='whole')
    test_window: Size | None
    test_stride: Size | None
    # a single-scale model's test: slide windows and stride, or None: the whole (resized) image
    single_window: Size | None = None
    single_stride: Size | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset's place in the recipes."""

    classes: int  # K of its labels (the Cityscapes train ids: 19)
    # (long, short) keep-ratio resize (mmseg img_scale) at DAFormer's / HRDA's resolution;
    # None: not resized (the synthetic scenes are generated at data.synthetic_size)
    resize_half: Size | None
    resize_full: Size | None


RECIPES = {
    "daformer": Recipe(crop=(512, 512), full_resolution=False, test_window=(1024, 1024), test_stride=(512, 512)),
    "hrda": Recipe(crop=(1024, 1024), full_resolution=True, test_window=(1024, 1024), test_stride=(512, 512)),
    "mic": Recipe(crop=(1024, 1024), full_resolution=True, test_window=(1024, 1024), test_stride=(512, 512)),
    # HRDA experiments.py id 43 (target-only at DAFormer's resolution): DAFormer's data sizes,
    # inference='slide' with the crop as window and half of it as stride
    "target_only": Recipe(crop=(512, 512), full_resolution=False, test_window=(1024, 1024), test_stride=(512, 512),
                          single_window=(512, 512), single_stride=(256, 256)),
    # HRDA experiments.py id 41's HRDA rows (hrda1-512-0.1_dlv2red with AdvSeg / MinEnt / DACS): HRDA's
    # data sizes, inference='whole' (the default there): the whole 2048x1024 image through HRDA's scales
    "hrda_whole": Recipe(crop=(1024, 1024), full_resolution=True, test_window=None, test_stride=None),
}

DATASETS = {
    "gta": Dataset(classes=19, resize_half=(1280, 720), resize_full=(2560, 1440)),
    "synthia": Dataset(classes=19, resize_half=(1280, 760), resize_full=(2560, 1520)),
    "cityscapes": Dataset(classes=19, resize_half=(1024, 512), resize_full=(2048, 1024)),
    # HRDA uda_cityscapes{,HR}_to_{acdc,darkzurich}{,HR}_*.py (frames of 1920x1080); an ACDC condition
    # (acdc_night, ...) reads a part of ACDC at ACDC's sizes
    **{name: Dataset(classes=19, resize_half=(960, 540), resize_full=(1920, 1080))
       for name in ("acdc", "acdc_fog", "acdc_night", "acdc_rain", "acdc_snow", "dark_zurich")},
    # evaluation only: the test resize of the GTA -> Cityscapes configs they are evaluated with
    # (HRDA dg branch tools/test.py --dataset BDD100K / Mapillary)
    "bdd100k": Dataset(classes=19, resize_half=(1024, 512), resize_full=(2048, 1024)),
    "mapillary": Dataset(classes=19, resize_half=(1024, 512), resize_full=(2048, 1024)),
    "synthetic": Dataset(classes=6, resize_half=None, resize_full=None),
}


def recipe_resize(recipe: str, dataset: str) -> Size | None:
    """The published (long, short) resize of ``dataset`` under ``recipe``."""
    row = DATASETS[dataset]
    return row.resize_full if RECIPES[recipe].full_resolution else row.resize_half


# ---------------------------------------------------------------- what a config asks for
# (the recipe's sizes unless data.crop_size / data.resize say otherwise)


def train_crop(cfg) -> Size:
    """(h, w) of the training crop: data.crop_size, the synthetic scene, or the recipe's."""
    if cfg.data.source == "synthetic":
        return cfg.data.synthetic_size, cfg.data.synthetic_size
    return tuple(cfg.data.crop_size or RECIPES[cfg.data.recipe].crop)


def resize(cfg, dataset: str) -> Size | None:
    """(long, short) resize of ``dataset`` (train and test): data.resize, or the recipe's."""
    if cfg.data.resize is not None:
        return tuple(cfg.data.resize)
    return recipe_resize(cfg.data.recipe, dataset)


def test_windows(cfg) -> tuple[Size | None, Size | None]:
    """(window, stride) of slide inference, the recipe's (``test_window`` for HRDA models,
    ``single_window`` for single-scale ones); None: the whole image (always for the synthetic scenes)."""
    if cfg.data.target == "synthetic":
        return None, None
    r = RECIPES[cfg.data.recipe]
    return (r.test_window, r.test_stride) if cfg.hrda.enabled else (r.single_window, r.single_stride)
