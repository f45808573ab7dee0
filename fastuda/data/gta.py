"""GTA5 ("Playing for Data", Richter et al. 2016) as released.

Layout under ``root`` (24,966 frames of 1914 x 1052)::

    images/00001.png ...            RGB frames
    labels/00001.png ...            8-bit palette PNGs of Cityscapes labelIds
    labels/00001_labelTrainIds.png  written by `python -m fastuda.data.convert gta ROOT` (optional)

The label ids are Cityscapes labelIds, mapped to the 19 train ids on load
(or baked in by the conversion). GTA5 has one split, "train".
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import CITYSCAPES_LABEL_IDS
from .transforms import Pipeline

LAYOUT = "images/*.png and labels/*.png (Cityscapes labelIds)"


def gta5(root, split: str = "train", pipeline: Pipeline | None = None, seed: int | None = None) -> SegmentationDataset:
    """The GTA5 dataset at ``root`` (all frames: the published code trains on all)."""
    if split != "train":
        raise ValueError(f"GTA5 has a single split 'train' (all frames), got split={split!r}")
    root = Path(root)
    samples = scan_pairs(
        "GTA5", root, LAYOUT,
        image_dir=root / "images", image_suffix=".png",
        label_dir=root / "labels", raw_suffix=".png", raw_format=CITYSCAPES_LABEL_IDS,
        train_suffix="_labelTrainIds.png",
    )  # fmt: skip
    return SegmentationDataset("gta", root, samples, pipeline, seed=seed)
