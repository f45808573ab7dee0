"""Dark Zurich (Sakaridis et al. 2019) as released.

Layout under ``root`` (Dark_Zurich_train_anon.zip, Dark_Zurich_val_anon.zip and
Dark_Zurich_test_anon_withoutGt.zip; 1920 x 1080)::

    rgb_anon/train/<day|twilight|night>/<seq>/<seq>_frame_<n>_rgb_anon.png   (3,041 / 2,920 / 2,416)
    rgb_anon/val/night/<seq>/<seq>_frame_<n>_rgb_anon.png                    (50)
    gt/val/night/<seq>/<seq>_frame_<n>_gt_labelTrainIds.png                  (beside it _gt_labelIds.png, ...)
    rgb_anon/test/night/<seq>/<seq>_frame_<n>_rgb_anon.png                   (151, no labels)

The published target (HRDA ``uda_cityscapesHR_to_darkzurichHR_1024x1024.py``)
is ``rgb_anon/train/night`` only, unlabelled, and evaluates on
``rgb_anon/val`` + ``gt/val``. ``time`` picks the train folder (val and test
are night only). The ``*_ref`` daytime references are not used.
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import CITYSCAPES_LABEL_IDS
from .transforms import Pipeline

SPLITS = ("train", "val", "test")
TIMES = ("day", "twilight", "night")
LAYOUT = (
    "rgb_anon/train/<day|twilight|night>/<seq>/*_rgb_anon.png, rgb_anon/{val,test}/night/<seq>/*_rgb_anon.png "
    "and gt/val/night/<seq>/*_gt_labelTrainIds.png"
)


def dark_zurich(
    root, split: str = "train", time: str = "night", pipeline: Pipeline | None = None, seed: int | None = None
) -> SegmentationDataset:
    """The Dark Zurich ``split`` ("train", "val" or "test") at ``root``; ``time`` of day for train."""
    if split not in SPLITS:
        raise ValueError(f"Dark Zurich split must be one of {SPLITS}, got {split!r}")
    if time not in TIMES or (split != "train" and time != "night"):
        allowed = TIMES if split == "train" else ("night",)
        raise ValueError(f"Dark Zurich {split} time must be one of {allowed}, got {time!r}")
    root = Path(root)
    samples = scan_pairs(
        "Dark Zurich", root, LAYOUT,
        image_dir=root / "rgb_anon" / split / time, image_suffix="_rgb_anon.png",
        label_dir=root / "gt" / split / time if split == "val" else None,
        raw_suffix="_gt_labelIds.png", raw_format=CITYSCAPES_LABEL_IDS,
        train_suffix="_gt_labelTrainIds.png", pattern="*/*",
    )  # fmt: skip
    return SegmentationDataset("dark_zurich", root, samples, pipeline, seed=seed)
