"""The published data recipes as a table: for each (recipe, dataset, role), what its pipeline does
and the published config it is transcribed from; ``preset_pipeline`` builds the ``Pipeline``.

The sizes (training crop, each dataset's resize at DAFormer's and HRDA's resolution) have their one
home in ``fastuda.config.recipes``; the rows here say what else each published pipeline does, and
where it is written.
"""

from dataclasses import dataclass

from fastuda.config.recipes import RECIPES, recipe_resize

from .transforms import HRDA_PSEUDO_MARGINS, Pipeline


# Dataset names as the table spells them, and the aliases every entry point accepts
# (an ACDC condition picks files, not a pipeline).
DATASET_ALIASES = {
    "gta5": "gta", "darkzurich": "dark_zurich", "bdd": "bdd100k",
    **{f"acdc_{c}": "acdc" for c in ("fog", "night", "rain", "snow")},
}  # fmt: skip
# source / target: UDA training; test: evaluation; target_only: supervised training on the target
# (with PhotoMetricDistortion); caug_source / caug_target: the 'CAug' pair (gtaCAug -> cityscapes:
# PhotoMetricDistortion on the source, a plain target crop), HRDA experiment 41's AdvSeg / MinEnt and,
# source only, the dg branch's domain generalisation (id 50)
ROLES = ("source", "target", "test", "target_only", "caug_source", "caug_target")
# The role a dataset has in the published benchmarks when none is asked for.
DEFAULT_ROLE = {"gta": "source", "synthia": "source", "cityscapes": "target", "acdc": "target",
                "dark_zurich": "target", "bdd100k": "test", "mapillary": "test"}  # fmt: skip


@dataclass(frozen=True)
class PublishedPipeline:
    """One row of the published data recipes: what a dataset's pipeline does in one role,
    and the config it is transcribed from (lhoyer/HRDA unless named otherwise). Its resize
    and crop are the recipe's (``fastuda.config.recipes``); a test row has no crop."""

    config: str  # the published file that defines it
    train: bool = True  # RandomCrop, RandomFlip(0.5) and Pad to the recipe's crop; False: the test pipeline
    cat_max_ratio: float = 1.0  # RandomCrop's cat_max_ratio (1.0: a plain random crop)
    pseudo_margins: tuple[int, int, int, int] | None = None  # HRDA valid pseudo-label mask (target only)
    photometric: bool = False  # PhotoMetricDistortion after the flip

    def pipeline(self, recipe: str, dataset: str) -> Pipeline:
        """The pipeline at ``recipe``'s sizes for ``dataset`` (a name of ``fastuda.config.DATASETS``)."""
        scale = recipe_resize(recipe, dataset)
        if not self.train:
            return Pipeline(scale=scale, resize_label=False)
        return Pipeline(scale=scale, crop_size=RECIPES[recipe].crop, cat_max_ratio=self.cat_max_ratio, flip_prob=0.5,
                        pseudo_margins=self.pseudo_margins, photometric=self.photometric)  # fmt: skip


def _config(name: str) -> str:
    return f"configs/_base_/datasets/{name}.py"


def _dg_test(name: str) -> str:  # dg branch: tools/test.py --dataset BDD100K / Mapillary
    return f"tools/test.py --dataset (dg branch), the test pipeline of {_config(name)}"


_P = PublishedPipeline
# (recipe, dataset, role) -> row. "mic" reads "hrda"'s rows (MIC keeps HRDA's data configs).
# Every training row flips with p 0.5, normalises with the ImageNet mean and std and pads
# to the crop with 0 / 255. Rows not here are not published.
PUBLISHED_PIPELINES: dict[tuple[str, str, str], PublishedPipeline] = {
    # DAFormer, crop 512 (lhoyer/DAFormer; the same files are in HRDA)
    ("daformer", "gta", "source"): _P(_config("uda_gta_to_cityscapes_512x512"), cat_max_ratio=0.75),
    ("daformer", "synthia", "source"): _P(_config("uda_synthia_to_cityscapes_512x512"), cat_max_ratio=0.75),
    # DAFormer's Cityscapes target loads its labels for cat_max_ratio (as published)
    ("daformer", "cityscapes", "target"): _P(_config("uda_gta_to_cityscapes_512x512"), cat_max_ratio=0.75),
    ("daformer", "cityscapes", "source"): _P(_config("uda_cityscapes_to_acdc_512x512"), cat_max_ratio=0.75),
    ("daformer", "cityscapes", "test"): _P(_config("uda_gta_to_cityscapes_512x512"), train=False),
    ("daformer", "acdc", "target"): _P(_config("uda_cityscapes_to_acdc_512x512")),
    ("daformer", "acdc", "test"): _P(_config("uda_cityscapes_to_acdc_512x512"), train=False),
    ("daformer", "dark_zurich", "target"): _P(_config("uda_cityscapes_to_darkzurich_512x512")),
    ("daformer", "dark_zurich", "test"): _P(_config("uda_cityscapes_to_darkzurich_512x512"), train=False),
    # target-only (HRDA experiments.py id 43: datasets/<target>_<crop>.py) and DG (dg branch id 50: gtaCAug)
    ("daformer", "cityscapes", "target_only"): _P(_config("cityscapes_512x512"), cat_max_ratio=0.75,
                                                  photometric=True),
    # AdvSeg / MinEnt (HRDA experiments.py id 41: 'gtaCAug' -> 'cityscapes'): the target's crop is plain there
    ("daformer", "gta", "caug_source"): _P(_config("uda_gtaCAug_to_cityscapes_512x512"), cat_max_ratio=0.75,
                                           photometric=True),
    ("daformer", "cityscapes", "caug_target"): _P(_config("uda_gtaCAug_to_cityscapes_512x512")),
    ("daformer", "bdd100k", "test"): _P(_dg_test("uda_gtaCAug_to_cityscapes_512x512"), train=False),
    ("daformer", "mapillary", "test"): _P(_dg_test("uda_gtaCAug_to_cityscapes_512x512"), train=False),
    # HRDA (and MIC), crop 1024
    ("hrda", "gta", "source"): _P(_config("uda_gtaHR_to_cityscapesHR_1024x1024"), cat_max_ratio=0.75),
    ("hrda", "synthia", "source"): _P(_config("uda_synthiaHR_to_cityscapesHR_1024x1024"), cat_max_ratio=0.75),
    # a plain crop; the margins come from experiments.py (plcrop='v2': crop_pseudo_margins)
    ("hrda", "cityscapes", "target"): _P(_config("uda_gtaHR_to_cityscapesHR_1024x1024"),
                                         pseudo_margins=HRDA_PSEUDO_MARGINS),
    ("hrda", "cityscapes", "source"): _P(_config("uda_cityscapesHR_to_acdcHR_1024x1024"), cat_max_ratio=0.75),
    ("hrda", "cityscapes", "test"): _P(_config("uda_gtaHR_to_cityscapesHR_1024x1024"), train=False),
    # no margins: experiments.py id 49 sets plcrop=False ("ACDC and DarkZurich have no rectification artifacts")
    ("hrda", "acdc", "target"): _P(_config("uda_cityscapesHR_to_acdcHR_1024x1024")),
    ("hrda", "acdc", "test"): _P(_config("uda_cityscapesHR_to_acdcHR_1024x1024"), train=False),
    ("hrda", "dark_zurich", "target"): _P(_config("uda_cityscapesHR_to_darkzurichHR_1024x1024")),
    ("hrda", "dark_zurich", "test"): _P(_config("uda_cityscapesHR_to_darkzurichHR_1024x1024"), train=False),
    ("hrda", "cityscapes", "target_only"): _P(_config("cityscapesHR_1024x1024"), cat_max_ratio=0.75, photometric=True),
    ("hrda", "gta", "caug_source"): _P(_config("uda_gtaCAugHR_to_cityscapesHR_1024x1024"), cat_max_ratio=0.75,
                                       photometric=True),
    ("hrda", "cityscapes", "caug_target"): _P(_config("uda_gtaCAugHR_to_cityscapesHR_1024x1024")),
    ("hrda", "bdd100k", "test"): _P(_dg_test("uda_gtaCAugHR_to_cityscapesHR_1024x1024"), train=False),
    ("hrda", "mapillary", "test"): _P(_dg_test("uda_gtaCAugHR_to_cityscapesHR_1024x1024"), train=False),
}  # fmt: skip


def _row(recipe: str, dataset: str, role: str | None) -> tuple[str, str, PublishedPipeline]:
    """(recipe, canonical dataset, row), with every argument checked."""
    recipe = recipe.lower()
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    key = "hrda" if RECIPES[recipe].full_resolution else "daformer"  # MIC keeps HRDA's data configs
    dataset = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    if dataset not in DEFAULT_ROLE:
        raise ValueError(f"dataset must be one of {tuple(DEFAULT_ROLE)}, got {dataset!r}")
    role = DEFAULT_ROLE[dataset] if role is None else role
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if (key, dataset, role) not in PUBLISHED_PIPELINES:
        roles = [r for (k, d, r) in PUBLISHED_PIPELINES if (k, d) == (key, dataset)]
        raise ValueError(
            f"the published {recipe} recipe has no {role} pipeline for {dataset}; it has {', '.join(roles)}"
        )
    return recipe, dataset, PUBLISHED_PIPELINES[key, dataset, role]


def published_pipeline(recipe: str, dataset: str, role: str | None = None) -> PublishedPipeline:
    """The row of ``PUBLISHED_PIPELINES`` for ``recipe`` ("daformer", "hrda", "mic"), ``dataset``
    (aliases such as "gta5" or "acdc_night" accepted) and ``role`` (one of ``ROLES``; None:
    the dataset's role in the published benchmarks, ``DEFAULT_ROLE``)."""
    return _row(recipe, dataset, role)[2]


def preset_pipeline(recipe: str, dataset: str, train: bool = True, role: str | None = None) -> Pipeline:
    """The published pipeline of ``recipe`` ("daformer", "hrda", "mic") for ``dataset``.

    ``train=False`` gives the test pipeline: the image is resized, the label kept
    at full resolution. ``role`` ("source" or "target") picks between the two
    training pipelines of a dataset that has both (Cityscapes); by default a
    dataset plays its published role (``DEFAULT_ROLE``). "target_only"
    (Cityscapes) is the supervised pipeline of the target-only configs: the
    source geometry with cat_max_ratio 0.75, plus PhotoMetricDistortion.
    "caug_source" (GTA5) and "caug_target" (Cityscapes) are the 'CAug' pair of
    AdvSeg / MinEnt (HRDA experiments.py id 41): the source with
    PhotoMetricDistortion, the target with a plain crop and no valid mask; the
    domain-generalisation configs (dg branch, id 50) train on its source alone. ``PUBLISHED_PIPELINES`` holds
    every row with the config it comes from; the sizes are
    ``fastuda.config.RECIPES`` (crop) and ``DATASETS`` (resize):

    ====================  ==========================  =================================
    dataset (role)        DAFormer (crop 512)         HRDA / MIC (crop 1024)
    ====================  ==========================  =================================
    gta                   1280x720 -> 1280x704        2560x1440 -> 2560x1407
    synthia               1280x760                    2560x1520
    cityscapes (target)   1024x512                    2048x1024, plain crop, valid mask
    cityscapes (source)   1024x512                    2048x1024
    acdc, dark_zurich     960x540, plain crop         1920x1080, plain crop
    test: cityscapes,     1024x512                    2048x1024
    bdd100k, mapillary
    test: acdc,           960x540                     1920x1080
    dark_zurich
    ====================  ==========================  =================================

    Training crops use cat_max_ratio 0.75 unless "plain crop". DAFormer's
    Cityscapes target pipeline also loads the ground truth to apply
    cat_max_ratio 0.75: the published target crop selection sees the target
    labels (kept here as published). HRDA and MIC's Cityscapes training target
    carries the valid pseudo-label mask (margins 30, 240, 30, 30); ACDC and Dark
    Zurich do not (HRDA experiments.py id 49).
    """
    recipe, dataset, row = _row(recipe, dataset, "test" if not train else role)
    return row.pipeline(recipe, dataset)
