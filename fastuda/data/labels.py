"""The 19 Cityscapes train ids, and how each dataset's raw label ids map onto them.

Every dataset is trained and evaluated in the Cityscapes train-id space: 19
classes, 255 = ignore. GTA5 labels hold Cityscapes labelIds, so GTA5 and
Cityscapes share one mapping (DAFormer's ``tools/convert_datasets/gta.py``,
cityscapesscripts' ``labels.py``). SYNTHIA RAND_CITYSCAPES uses its own ids
(its README; DAFormer's ``tools/convert_datasets/synthia.py``). ACDC and Dark
Zurich ship Cityscapes labelIds and train ids; BDD100K's masks are train ids.
Mapillary Vistas v1.2 has 66 classes of its own, merged onto the 19 as HRDA's
``tools/convert_datasets/mapillary.py`` does.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np

NUM_CLASSES = 19
IGNORE_INDEX = 255

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Cityscapes (and GTA5) labelId -> trainId; every other id (void, unlabelled,
# license plate, ...) becomes 255.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# SYNTHIA class id (first channel of GT/LABELS) -> trainId. Terrain (16 -> 9),
# truck (18 -> 14) and train (20 -> 16) are mapped but never occur in Synthia.
SYNTHIA_ID_TO_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip

# Mapillary Vistas v1.2 class id (the index in validation/labels/*.png) -> trainId,
# HRDA tools/convert_datasets/mapillary.py: lane markings and manholes count as road,
# curbs as sidewalk, utility poles as poles, bicyclists, motorcyclists and other riders
# as rider, "on rails" as train; every other id (e.g. 65 unlabelled) becomes 255.
MAPILLARY_ID_TO_TRAIN_ID = {
    13: 0, 24: 0, 41: 0, 2: 1, 15: 1, 17: 2, 6: 3, 3: 4, 45: 5, 47: 5, 48: 6, 50: 7,
    30: 8, 29: 9, 27: 10, 19: 11, 20: 12, 21: 12, 22: 12, 55: 13, 61: 14, 54: 15,
    58: 16, 57: 17, 52: 18,
}  # fmt: skip

# Synthia -> Cityscapes is reported on the classes Synthia has: mIoU16 drops
# terrain, truck and train; mIoU13 also drops wall, fence and pole.
SYNTHIA_16 = tuple(c for c in range(NUM_CLASSES) if c not in (9, 14, 16))
SYNTHIA_13 = tuple(c for c in SYNTHIA_16 if c not in (3, 4, 5))


@dataclass(frozen=True)
class LabelFormat:
    """How a label PNG stores classes, so a loader can check and map it.

    Frozen and small (the mapping is a tuple) so it pickles cheaply into
    DataLoader and conversion workers; the lookup table is built once per
    process.
    """

    description: str  # what the file holds, for error messages
    bit_depth: int  # 8 or 16 bits per channel in the PNG
    color_types: tuple[int, ...]  # accepted PNG colour types (0 grey, 2 RGB, 3 palette, 6 RGBA)
    mapping: tuple[tuple[int, int], ...] | None = None  # raw id -> train id; None: already train ids
    num_classes: int = NUM_CLASSES  # train ids are in [0, num_classes) or 255

    @property
    def lookup(self) -> np.ndarray | None:
        """uint8 table raw id -> train id (255 elsewhere), or None for train-id files."""
        return None if self.mapping is None else _lookup_table(self.mapping, 1 << self.bit_depth)


@cache
def _lookup_table(mapping: tuple[tuple[int, int], ...], size: int) -> np.ndarray:
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping:
        table[raw] = train
    table.flags.writeable = False  # shared by every caller
    return table


def train_ids(num_classes: int = NUM_CLASSES) -> LabelFormat:
    """8-bit grey (or palette) PNGs holding train ids: ``*_labelTrainIds.png`` and own datasets."""
    return LabelFormat(f"8-bit train ids (0..{num_classes - 1}, 255 = ignore)", 8, (0, 3), None, num_classes)


CITYSCAPES_LABEL_IDS = LabelFormat(
    "8-bit Cityscapes labelIds", 8, (0, 3), tuple(sorted(CITYSCAPES_ID_TO_TRAIN_ID.items()))
)
# Synthia's GT/LABELS: 16 bits per channel, RGB; the class id is the first (R)
# channel, the instance id the second. PIL reads only the high byte of 16-bit
# RGB, which is why the published converter uses cv2 and fastuda uses torchvision.
SYNTHIA_LABELS = LabelFormat(
    "16-bit SYNTHIA labels (class id in the first channel)",
    16,
    (0, 2, 6),
    tuple(sorted(SYNTHIA_ID_TO_TRAIN_ID.items())),
)
# Mapillary Vistas v1.2 validation/labels: 8-bit palette PNGs whose indices are the class ids.
MAPILLARY_LABELS = LabelFormat(
    "8-bit Mapillary Vistas v1.2 class ids", 8, (0, 3), tuple(sorted(MAPILLARY_ID_TO_TRAIN_ID.items()))
)
TRAIN_IDS = train_ids()
