"""Cityscapes (Cordts et al. 2016) as released (leftImg8bit_trainvaltest + gtFine_trainvaltest).

Layout under ``root`` (2,975 train and 500 val frames of 2048 x 1024)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (optional)

``*_gtFine_labelTrainIds.png`` is read when present (written by
`python -m fastuda.data.convert cityscapes ROOT`, or by cityscapesscripts'
createTrainIdLabelImgs); otherwise labelIds are mapped to train ids on load.
The other gtFine files (_color, _instanceIds, _polygons.json) are not used.
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import CITYSCAPES_LABEL_IDS
from .transforms import Pipeline

SPLITS = ("train", "val")
LAYOUT = (
    "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and "
    "gtFine/{train,val}/<city>/*_gtFine_labelIds.png (or *_gtFine_labelTrainIds.png)"
)


def cityscapes(
    root, split: str = "train", pipeline: Pipeline | None = None, seed: int | None = None
) -> SegmentationDataset:
    """The Cityscapes ``split`` ("train" or "val") at ``root``."""
    if split not in SPLITS:
        raise ValueError(f"Cityscapes split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    samples = scan_pairs(
        "Cityscapes", root, LAYOUT,
        image_dir=root / "leftImg8bit" / split, image_suffix="_leftImg8bit.png",
        label_dir=root / "gtFine" / split, raw_suffix="_gtFine_labelIds.png", raw_format=CITYSCAPES_LABEL_IDS,
        train_suffix="_gtFine_labelTrainIds.png", pattern="*/*",
    )  # fmt: skip
    return SegmentationDataset("cityscapes", root, samples, pipeline, seed=seed)
