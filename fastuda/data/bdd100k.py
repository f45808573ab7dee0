"""BDD100K semantic segmentation (Yu et al. 2020), the "10K Images" and "Segmentation" downloads.

Layout under ``root`` (1280 x 720; train 7,000, val 1,000)::

    images/10k/{train,val}/<name>.jpg
    labels/sem_seg/masks/{train,val}/<name>.png      8-bit Cityscapes train ids (255 = ignore)

As HRDA's ``mmseg/datasets/bdd100k.py`` (dg branch) reads it: for evaluating
domain generalisation (GTA -> BDD100K). The masks are train ids already, so
there is nothing to convert.
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import TRAIN_IDS
from .transforms import Pipeline

SPLITS = ("train", "val")
LAYOUT = "images/10k/{train,val}/*.jpg and labels/sem_seg/masks/{train,val}/*.png (train ids)"


def bdd100k(
    root, split: str = "val", pipeline: Pipeline | None = None, seed: int | None = None
) -> SegmentationDataset:
    """The BDD100K 10K ``split`` ("val" or "train") at ``root``."""
    if split not in SPLITS:
        raise ValueError(f"BDD100K split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    samples = scan_pairs(
        "BDD100K", root, LAYOUT,
        image_dir=root / "images" / "10k" / split, image_suffix=".jpg",
        label_dir=root / "labels" / "sem_seg" / "masks" / split, raw_suffix=".png", raw_format=TRAIN_IDS,
        train_suffix=None,
    )  # fmt: skip
    return SegmentationDataset("bdd100k", root, samples, pipeline, seed=seed)
