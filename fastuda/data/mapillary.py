"""Mapillary Vistas v1.2 (Neuhold et al. 2017), mapped to the 19 Cityscapes classes.

Layout under ``root`` (mapillary-vistas-dataset_public_v1.2.zip; images of many sizes;
training 18,000, validation 2,000)::

    {training,validation}/images/<name>.jpg
    {training,validation}/labels/<name>.png                 8-bit palette PNGs of the 66 v1.2 class ids
    {training,validation}/labels/<name>_labelTrainIds.png   written by `python -m fastuda.data.convert mapillary ROOT`

The v2.0 download keeps the v1.2 labels in ``validation/v1.2/labels``; that
folder is read when ``validation/labels`` is absent. Class ids are merged onto
the Cityscapes train ids as HRDA's ``tools/convert_datasets/mapillary.py``
does (fastuda.data.labels.MAPILLARY_ID_TO_TRAIN_ID), on load or by the
conversion. For evaluating domain generalisation (GTA -> Mapillary), as HRDA's
``mmseg/datasets/mapillary.py`` (dg branch) reads it.
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import MAPILLARY_LABELS
from .transforms import Pipeline

SPLITS = {"val": "validation", "validation": "validation", "train": "training", "training": "training"}
LAYOUT = "{training,validation}/images/*.jpg and {training,validation}/labels/*.png (v1.2 class ids)"


def mapillary(
    root, split: str = "val", pipeline: Pipeline | None = None, seed: int | None = None
) -> SegmentationDataset:
    """The Mapillary Vistas ``split`` ("val" / "validation" or "train" / "training") at ``root``."""
    if split not in SPLITS:
        raise ValueError(f"Mapillary split must be one of {tuple(SPLITS)}, got {split!r}")
    root = Path(root)
    folder = root / SPLITS[split]
    labels = folder / "labels"
    if not labels.is_dir() and (folder / "v1.2" / "labels").is_dir():  # the v2.0 download
        labels = folder / "v1.2" / "labels"
    samples = scan_pairs(
        "Mapillary", root, LAYOUT,
        image_dir=folder / "images", image_suffix=".jpg",
        label_dir=labels, raw_suffix=".png", raw_format=MAPILLARY_LABELS, train_suffix="_labelTrainIds.png",
    )  # fmt: skip
    return SegmentationDataset("mapillary", root, samples, pipeline, seed=seed)
