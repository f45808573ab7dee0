"""The published data code, transcribed for the data tests: lhoyer/HRDA's label conversion
(``tools/convert_datasets``) and mmseg 0.16's RandomCrop. These are the tests' independent
oracle: nothing here calls fastuda."""

import json

import numpy as np
import torch

# The mappings exactly as issue 7 and REFERENCE-NOTES list them: cityscapesscripts' labelId ->
# trainId (also the ids in ACDC's and Dark Zurich's labelIds files) and Synthia's class id -> trainId.
CITYSCAPES_MAPPING = (
    "7:0 8:1 11:2 12:3 13:4 17:5 19:6 20:7 21:8 22:9 23:10 24:11 25:12 26:13 27:14 28:15 31:16 32:17 33:18"
)
SYNTHIA_MAPPING = "3:0 4:1 2:2 21:3 5:4 7:5 15:6 9:7 6:8 16:9 1:10 10:11 17:12 8:13 18:14 19:15 20:16 12:17 11:18"


def parse_mapping(text: str) -> dict:
    return {int(a): int(b) for a, b in (pair.split(":") for pair in text.split())}


def published_convert_to_train_id(raw: np.ndarray, id_to_trainid: dict, file: str | None):
    """tools/convert_datasets/gta.py ``convert_to_train_id`` (mapillary.py's is the same loop),
    transcribed: label array in, (train-id label, stats) out."""
    label_copy = 255 * np.ones(raw.shape, dtype=np.uint8)
    sample_class_stats = {}
    for k, v in id_to_trainid.items():
        k_mask = raw == k
        label_copy[k_mask] = v
        n = int(np.sum(k_mask))
        if n > 0:
            sample_class_stats[v] = n
    sample_class_stats["file"] = file
    return label_copy, sample_class_stats


def published_train_ids(raw: np.ndarray, id_to_trainid: dict) -> np.ndarray:
    """The published conversion's label alone: start at 255, set each id."""
    return published_convert_to_train_id(raw, id_to_trainid, None)[0]


def published_save_class_stats(sample_class_stats: list) -> dict:
    """tools/convert_datasets/gta.py ``save_class_stats``, transcribed to return the file texts."""
    texts = {"sample_class_stats.json": json.dumps(sample_class_stats, indent=2)}
    sample_class_stats_dict = {}
    for stats in sample_class_stats:
        f = stats.pop("file")
        sample_class_stats_dict[f] = stats
    texts["sample_class_stats_dict.json"] = json.dumps(sample_class_stats_dict, indent=2)
    samples_with_class = {}
    for file, stats in sample_class_stats_dict.items():
        for c, n in stats.items():
            if c not in samples_with_class:
                samples_with_class[c] = [(file, n)]
            else:
                samples_with_class[c].append((file, n))
    texts["samples_with_class.json"] = json.dumps(samples_with_class, indent=2)
    return texts


def assert_converted_as_published(root, expected_stats: list, ds, before: list):
    """After a conversion: the statistics files at ``root`` are what the published
    ``save_class_stats`` writes from ``expected_stats``, and ``ds``, loaded again, reads the
    train-id files, with the labels ``before`` it read before the conversion."""
    for name, text in published_save_class_stats(expected_stats).items():
        assert (root / name).read_text() == text, name
    assert all(s.label.name.endswith("_labelTrainIds.png") for s in ds.samples)
    for i, label in enumerate(before):
        torch.testing.assert_close(ds[i]["label"], label)


def mmseg_crop_bbox(label: np.ndarray, crop, cat_max_ratio: float, randint, ignore_index: int = 255):
    """mmseg 0.16 RandomCrop.__call__ / get_crop_bbox on the segmentation map, transcribed:
    the crop box (y1, y2, x1, x2). ``randint(high)`` stands for np.random.randint(0, high)."""

    def get_crop_bbox():
        margin_h = max(label.shape[0] - crop[0], 0)
        margin_w = max(label.shape[1] - crop[1], 0)
        offset_h = randint(margin_h + 1)
        offset_w = randint(margin_w + 1)
        return offset_h, offset_h + crop[0], offset_w, offset_w + crop[1]

    crop_bbox = get_crop_bbox()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y1, y2, x1, x2 = crop_bbox
            labels, cnt = np.unique(label[y1:y2, x1:x2], return_counts=True)
            cnt = cnt[labels != ignore_index]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
                break
            crop_bbox = get_crop_bbox()
    return crop_bbox
