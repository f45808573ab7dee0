"""Evaluation protocol: confusion matrix, per-class IoU and mIoU19 / mIoU16 / mIoU13,
against an independent per-class numpy loop (mmseg's definition)."""

import math

import numpy as np
import pytest
import torch

import fastuda.ops
from fastuda.data import CITYSCAPES_CLASSES
from fastuda.metrics import (
    SYNTHIA_SUBSETS,
    class_iou,
    confusion_matrix,
    format_table,
    mean_iou,
    scores,
)


def numpy_iou(preds, labels, num_classes=19, ignore_index=255):
    """Per-class IoU over a whole split, counted class by class (mmseg's intersect / union)."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    for pred, label in zip(preds, labels):
        valid = label != ignore_index
        for c in range(num_classes):
            p, t = (pred == c) & valid, (label == c) & valid
            inter[c] += np.sum(p & t)
            union[c] += np.sum(p | t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union  # NaN for classes in neither


def _split(seed, images=3, shape=(37, 53), absent=(9, 14, 16)):
    """Predictions right ~60% of the time; labels with ignored pixels and some classes absent."""
    gen = torch.Generator().manual_seed(seed)
    labels, preds = [], []
    for _ in range(images):
        label = torch.randint(0, 19, shape, generator=gen)
        for c in absent:
            label[label == c] = 255
        label[torch.rand(shape, generator=gen) < 0.1] = 255
        noise = torch.randint(0, 19, shape, generator=gen)
        for c in absent:
            noise[noise == c] = 0
        pred = torch.where(torch.rand(shape, generator=gen) < 0.6, label.clamp(max=18), noise)
        labels.append(label)
        preds.append(pred)
    return preds, labels


def test_iou_matches_a_numpy_loop():
    preds, labels = _split(0)
    cm = sum(confusion_matrix(p, t) for p, t in zip(preds, labels))
    assert cm.dtype == torch.int64 and cm.shape == (19, 19)
    want = numpy_iou([p.numpy() for p in preds], [t.numpy() for t in labels])
    np.testing.assert_allclose(class_iou(cm).numpy(), want, rtol=1e-12, equal_nan=True)
    assert np.isnan(want[[9, 14, 16]]).all()  # neither labelled nor predicted
    assert math.isclose(mean_iou(cm), np.nanmean(want), rel_tol=1e-12)


def test_confusion_matrix_layout_and_ignore():
    label = torch.tensor([[0, 0, 1, 255], [2, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, label, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]  # rows: label, columns: prediction; 255 left out
    # batched input is the sum of its images
    preds, labels = _split(1)
    batch = confusion_matrix(torch.stack(preds), torch.stack(labels).to(torch.uint8))
    assert torch.equal(batch, sum(confusion_matrix(p, t) for p, t in zip(preds, labels)))


def test_synthia_subsets():
    preds, labels = _split(2)
    cm = sum(confusion_matrix(p, t) for p, t in zip(preds, labels))
    iou = numpy_iou([p.numpy() for p in preds], [t.numpy() for t in labels])
    s16 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
    s13 = [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
    got = scores(cm, SYNTHIA_SUBSETS)
    assert math.isclose(got["mIoU16"], np.mean(iou[s16]), rel_tol=1e-12)
    assert math.isclose(got["mIoU13"], np.mean(iou[s13]), rel_tol=1e-12)
    assert math.isclose(got["mIoU19"], np.nanmean(iou), rel_tol=1e-12)
    valid = np.concatenate([t.numpy().ravel() != 255 for t in labels])
    correct = np.concatenate([(p.numpy() == t.numpy()).ravel() for p, t in zip(preds, labels)])
    assert math.isclose(got["aAcc"], correct[valid].mean(), rel_tol=1e-12)


def test_synthia_model_predicting_16_classes_on_19_class_labels():
    """The usual Synthia case: terrain, truck, train are labelled but never predicted: IoU 0, not NaN."""
    label = torch.tensor([[9, 9, 0, 0]])
    pred = torch.tensor([[0, 0, 0, 0]])
    cm = confusion_matrix(pred, label)
    iou = class_iou(cm)
    assert iou[9] == 0 and math.isclose(float(iou[0]), 0.5) and torch.isnan(iou[1])
    got = scores(cm, SYNTHIA_SUBSETS)
    assert math.isclose(got["mIoU19"], 0.25) and math.isclose(got["mIoU16"], 0.5)


def test_no_host_sync():
    """Data-dependent host reads (bincount sizing, .item(), boolean masks) fail on meta tensors."""
    pred = torch.empty(2, 1024, 2048, dtype=torch.int64, device="meta")
    cm = confusion_matrix(pred, torch.empty(2, 1024, 2048, dtype=torch.uint8, device="meta"))
    assert cm.shape == (19, 19) and cm.device.type == "meta"


def test_bad_inputs():
    with pytest.raises(ValueError, match="label must hold class indices"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 19))
    with pytest.raises(ValueError, match="pred must hold class indices"):
        confusion_matrix(torch.full((2, 2), 19), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="subsets must be among"):
        scores(torch.zeros(19, 19, dtype=torch.long), ("mIoU7",))
    # with value checks off, bad values are dropped instead of corrupting other cells
    fastuda.ops.set_value_checks("off")
    cm = confusion_matrix(torch.tensor([0, 25, 1]), torch.tensor([0, 1, 300]))
    assert cm.sum() == 1 and cm[0, 0] == 1


def test_format_table():
    preds, labels = _split(3)
    cm = sum(confusion_matrix(p, t) for p, t in zip(preds, labels))
    table = format_table(cm, subsets=SYNTHIA_SUBSETS)
    lines = table.splitlines()
    assert all(name in table for name in CITYSCAPES_CLASSES)
    iou = class_iou(cm)
    car = next(line for line in lines if line.startswith("| car "))
    assert f"{100 * float(iou[13]):6.2f}" in car and car.count("x") == 2  # in mIoU16 and mIoU13
    terrain = next(line for line in lines if line.startswith("| terrain "))
    assert "n/a" in terrain and "x" not in terrain
    summary = scores(cm, SYNTHIA_SUBSETS)
    for name in SYNTHIA_SUBSETS:
        assert f"| {name}" in table and f"{100 * summary[name]:6.2f}" in table
    assert "mIoU16" not in format_table(cm)  # GTA: mIoU19 only
    assert len({len(line) for line in lines}) == 1  # a rectangular table
