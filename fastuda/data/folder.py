"""Your own dataset: a folder of images and label PNGs, plus a class list.

Layout under ``root`` (sub-folders allowed; a label has the image's relative
path with ``.png``)::

    images/a.jpg, images/town1/b.png ...   RGB images (PNG, JPEG, ...)
    labels/a.png, labels/town1/b.png ...   8-bit grey or palette PNGs of class indices

Label values are indices into ``classes`` (0 .. len(classes) - 1) with 255 =
ignore, or any 8-bit ids together with ``label_map`` (raw id -> class index;
unmapped ids become 255). ``labels=None`` makes an unlabelled dataset (a
target domain). Evaluate against Cityscapes only if ``classes`` are its 19.
"""

from collections.abc import Sequence
from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import IGNORE_INDEX, LabelFormat, train_ids
from .transforms import Pipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def folder_dataset(
    root,
    classes: Sequence[str],
    images: str = "images",
    labels: str | None = "labels",
    label_map: dict[int, int] | None = None,
    pipeline: Pipeline | None = None,
    seed: int | None = None,
) -> SegmentationDataset:
    """Images under ``root/images`` paired with label PNGs under ``root/labels``."""
    classes = tuple(classes)
    if not 1 <= len(classes) < IGNORE_INDEX:
        raise ValueError(f"classes must name between 1 and {IGNORE_INDEX - 1} classes, got {len(classes)}")
    if label_map is not None:
        bad = {
            k: v for k, v in label_map.items() if not (0 <= k < 256 and (0 <= v < len(classes) or v == IGNORE_INDEX))
        }
        if bad:
            raise ValueError(f"label_map must map 8-bit ids to class indices < {len(classes)} or 255, got {bad}")
        fmt = LabelFormat(
            "8-bit label ids (mapped by label_map)", 8, (0, 3), tuple(sorted(label_map.items())), len(classes)
        )
    else:
        fmt = train_ids(len(classes))
    root = Path(root)
    layout = f"{images}/**/*.{{png,jpg}}" + (f" and {labels}/**/*.png" if labels else "")
    samples = scan_pairs(
        "folder", root, layout,
        image_dir=root / images, image_suffix=IMAGE_SUFFIXES,
        label_dir=root / labels if labels else None, raw_suffix=".png", raw_format=fmt,
        train_suffix=None, pattern="**/*", num_classes=len(classes),
    )  # fmt: skip
    return SegmentationDataset("folder", root, samples, pipeline, class_names=classes, seed=seed)
