"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis et al. 2021), as released.

Release layout under ``root`` (rgb_anon_trainvaltest.zip + gt_trainval.zip; 1920 x 1080;
train 1,600 = 400 per condition, val 406, test 2,000 without labels)::

    rgb_anon/<fog|night|rain|snow>/<train|val|test>/<seq>/<seq>_frame_<n>_rgb_anon.png
    gt/<fog|night|rain|snow>/<train|val>/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png
        (beside it _gt_labelIds.png, _gt_labelColor.png and _gt_invIds.png)

The published code (HRDA ``mmseg/datasets/acdc.py``, ``uda_cityscapesHR_to_acdcHR_1024x1024.py``)
reads a flattened copy of all four conditions, made by its README's rsync::

    rgb_anon/<train|val>/<seq>_frame_<n>_rgb_anon.png
    gt/<train|val>/<seq>_frame_<n>_gt_labelTrainIds.png

Both are read (``layout="auto"`` takes the release when a condition folder is
there). One condition or any subset needs the release layout: the flattened
names do not say their condition. ``_gt_labelTrainIds.png`` is read, else
``_gt_labelIds.png`` (Cityscapes labelIds) through the lookup table; the
invalid-region masks (``_gt_invIds``) and the ``*_ref`` daytime references are
not used, as published. The train split is labelled when ``gt/`` has it (the
UDA target never reads the labels); val must be; test never is.
"""

from collections.abc import Sequence
from pathlib import Path

from .dataset import SegmentationDataset, check_dir, scan_pairs
from .labels import CITYSCAPES_LABEL_IDS
from .transforms import Pipeline

CONDITIONS = ("fog", "night", "rain", "snow")
SPLITS = ("train", "val", "test")
LAYOUTS = ("auto", "release", "flat")
IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_IDS_SUFFIX = "_gt_labelIds.png"
TRAIN_IDS_SUFFIX = "_gt_labelTrainIds.png"
RELEASE_LAYOUT = (
    "rgb_anon/<fog|night|rain|snow>/<split>/<seq>/*_rgb_anon.png and "
    "gt/<condition>/<split>/<seq>/*_gt_labelTrainIds.png (or *_gt_labelIds.png)"
)
FLAT_LAYOUT = "rgb_anon/<split>/*_rgb_anon.png and gt/<split>/*_gt_labelTrainIds.png (the published rsync)"


def conditions_of(conditions: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"``, one condition or several, checked, in the release's order."""
    wanted = CONDITIONS if conditions == "all" else (conditions,) if isinstance(conditions, str) else tuple(conditions)
    if not wanted or any(c not in CONDITIONS for c in wanted):
        raise ValueError(f"ACDC conditions must be 'all' or some of {CONDITIONS}, got {conditions!r}")
    return tuple(c for c in CONDITIONS if c in wanted)


def acdc(
    root,
    split: str = "train",
    conditions: str | Sequence[str] = "all",
    pipeline: Pipeline | None = None,
    seed: int | None = None,
    layout: str = "auto",
) -> SegmentationDataset:
    """The ACDC ``split`` ("train", "val" or "test") of ``conditions`` at ``root``."""
    if split not in SPLITS:
        raise ValueError(f"ACDC split must be one of {SPLITS}, got {split!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"ACDC layout must be one of {LAYOUTS}, got {layout!r}")
    wanted = conditions_of(conditions)
    root = Path(root)
    if layout == "auto":
        release = any((root / "rgb_anon" / c).is_dir() for c in CONDITIONS)
        layout = "flat" if not release and (root / "rgb_anon" / split).is_dir() else "release"
    if layout == "flat":
        if wanted != CONDITIONS:
            raise ValueError(
                f"ACDC: the flattened layout {root / 'rgb_anon' / split} does not record conditions; "
                f"conditions={wanted} need the release layout {RELEASE_LAYOUT}"
            )
        samples = _scan(root, root / "rgb_anon" / split, root / "gt" / split, split, "**/*", FLAT_LAYOUT)
    else:
        check_dir("ACDC", root, RELEASE_LAYOUT, root)  # a missing root, named as such
        samples = []
        for condition in wanted:
            image_dir = root / "rgb_anon" / condition / split
            if not image_dir.is_dir():
                flat = f" (or, for all four, the flattened {root / 'rgb_anon' / split})" if wanted == CONDITIONS else ""
                raise FileNotFoundError(
                    f"ACDC: {image_dir} is missing; expected the condition {condition!r} under {root}{flat}: "
                    f"{RELEASE_LAYOUT}"
                )
            samples += _scan(root, image_dir, root / "gt" / condition / split, split, "*/*", RELEASE_LAYOUT)
    return SegmentationDataset("acdc", root, samples, pipeline, seed=seed)


def _scan(root: Path, image_dir: Path, label_dir: Path, split: str, pattern: str, layout: str):
    labelled = split == "val" or (split == "train" and label_dir.is_dir())
    return scan_pairs(
        "ACDC", root, layout,
        image_dir=image_dir, image_suffix=IMAGE_SUFFIX,
        label_dir=label_dir if labelled else None, raw_suffix=LABEL_IDS_SUFFIX, raw_format=CITYSCAPES_LABEL_IDS,
        train_suffix=TRAIN_IDS_SUFFIX, pattern=pattern,
    )  # fmt: skip
