"""SYNTHIA RAND_CITYSCAPES (Ros et al. 2016) as released.

Layout under ``root`` (9,400 frames of 1280 x 760)::

    RGB/0000000.png ...                    RGB frames
    GT/LABELS/0000000.png ...              16-bit RGB PNGs: class id in the first channel,
                                           instance id in the second
    GT/LABELS/0000000_labelTrainIds.png    written by `python -m fastuda.data.convert synthia ROOT`

(The release's GT/COLOR and Depth folders are not used.) Synthia's class ids
are mapped to Cityscapes' 19 train ids on load; terrain, truck and train never
occur, hence the mIoU16 / mIoU13 protocol (fastuda.metrics).
"""

from pathlib import Path

from .dataset import SegmentationDataset, scan_pairs
from .labels import SYNTHIA_LABELS
from .transforms import Pipeline

LAYOUT = "RGB/*.png and GT/LABELS/*.png (16-bit, class id in the first channel)"


def synthia(
    root, split: str = "train", pipeline: Pipeline | None = None, seed: int | None = None
) -> SegmentationDataset:
    """The SYNTHIA RAND_CITYSCAPES dataset at ``root`` (all frames)."""
    if split != "train":
        raise ValueError(f"Synthia has a single split 'train' (all frames), got split={split!r}")
    root = Path(root)
    samples = scan_pairs(
        "Synthia", root, LAYOUT,
        image_dir=root / "RGB", image_suffix=".png",
        label_dir=root / "GT" / "LABELS", raw_suffix=".png", raw_format=SYNTHIA_LABELS,
        train_suffix="_labelTrainIds.png",
    )  # fmt: skip
    return SegmentationDataset("synthia", root, samples, pipeline, seed=seed)
