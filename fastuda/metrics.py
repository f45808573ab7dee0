"""Evaluation protocol: per-class IoU and mIoU from a confusion matrix.

As in mmseg 0.16 (``mean_iou``), which produced the published numbers:
pixels labelled 255 are left out; IoU_c = TP / (TP + FP + FN) over the whole
split (not averaged per image); a class absent from both the labels and the
predictions has IoU NaN and is left out of the mean (``np.nanmean``).

- mIoU19: all 19 Cityscapes classes (GTA5 -> Cityscapes).
- mIoU16: Synthia -> Cityscapes, the 16 classes Synthia has (no terrain,
  truck, train); mIoU13 also leaves out wall, fence and pole. Both average the
  19-class IoUs of those classes: the model still predicts 19 classes.

Accumulate on the device, one matrix per split::

    cm = torch.zeros(19, 19, dtype=torch.int64, device="cuda")
    for image, label in val_loader:
        cm += confusion_matrix(model(image).argmax(1), label)   # no host sync
    print(format_table(cm, subsets=SYNTHIA_SUBSETS))
"""

import math

import torch
from torch import Tensor

from fastuda.data.labels import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16
from fastuda.ops._checks import check_labels, value_checks_enabled

# name -> the classes a mean is taken over
SUBSETS = {"mIoU19": tuple(range(NUM_CLASSES)), "mIoU16": SYNTHIA_16, "mIoU13": SYNTHIA_13}
GTA_SUBSETS = ("mIoU19",)
SYNTHIA_SUBSETS = ("mIoU19", "mIoU16", "mIoU13")


def confusion_matrix(
    pred: Tensor, label: Tensor, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """int64 (C, C) counts, rows = label, columns = prediction, on ``pred``'s device.

    ``pred`` and ``label``: integer tensors of the same shape (any batch
    layout), predictions in [0, C), labels in [0, C) or ``ignore_index``.
    No host sync: ``torch.bincount`` would read the largest value back to the
    host to size its output, so the counts are scattered into a fixed-size
    histogram instead, with one spare bin that collects the ignored pixels.
    Counts are int64: a Cityscapes val split has 1e9 pixels, past float32's
    exact integers. Value checks run on CPU tensors (FASTUDA_DEBUG=1: all).
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}")
    if pred.dtype.is_floating_point or label.dtype.is_floating_point or pred.dtype == torch.bool:
        raise TypeError(f"pred and label must be integer class indices, got {pred.dtype} and {label.dtype}")
    if label.device != pred.device:
        raise ValueError(f"pred and label must be on the same device, got {pred.device} and {label.device}")
    if value_checks_enabled(pred.device) and pred.numel() and not bool(((pred >= 0) & (pred < num_classes)).all()):
        raise ValueError(f"pred must hold class indices in [0, {num_classes}), found {torch.unique(pred)[:8].tolist()}")
    check_labels("label", label, num_classes, ignore_index)
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long()
    spare = num_classes * num_classes
    # ignored pixels (and, with value checks off, out-of-range values) go to the spare bin
    valid = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    index = torch.where(valid, label * num_classes + pred, spare)
    hist = torch.zeros(spare + 1, dtype=torch.int64, device=pred.device)
    hist.index_add_(0, index, torch.ones_like(index))
    return hist[:spare].view(num_classes, num_classes)


def class_iou(cm: Tensor) -> Tensor:
    """float64 (C,) IoU per class from a (C, C) confusion matrix; NaN where the class
    is in neither the labels nor the predictions."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return tp / union  # 0 / 0 -> NaN, as mmseg


def class_accuracy(cm: Tensor) -> Tensor:
    """float64 (C,) per-class pixel accuracy (recall); NaN where the class has no label pixel."""
    cm = cm.double()
    return cm.diagonal() / cm.sum(1)


def mean_iou(cm: Tensor, classes=None) -> float:
    """mIoU over ``classes`` (default: all), NaN classes left out; NaN if all are."""
    iou = class_iou(cm)
    if classes is not None:
        iou = iou[list(classes)]
    valid = iou[~iou.isnan()]
    return float(valid.mean()) if valid.numel() else math.nan


def scores(cm: Tensor, subsets=GTA_SUBSETS) -> dict[str, float]:
    """{"mIoU19": ..., ...} for the named ``subsets`` (see SUBSETS), plus "aAcc"
    (overall pixel accuracy); fractions in [0, 1]."""
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"subsets must be among {tuple(SUBSETS)}, got {unknown}")
    out = {name: mean_iou(cm, SUBSETS[name]) for name in subsets}
    total = int(cm.sum())
    out["aAcc"] = float(cm.diagonal().sum()) / total if total else math.nan
    return out


def format_table(cm: Tensor, class_names=CITYSCAPES_CLASSES, subsets=GTA_SUBSETS) -> str:
    """The per-class table (IoU and accuracy in %), then the mIoUs of ``subsets``.

    With Synthia's subsets, columns 16 and 13 mark the classes each mean uses.
    """
    iou, acc = class_iou(cm).tolist(), class_accuracy(cm).tolist()
    marks = [s for s in subsets if s != "mIoU19"]
    width = max(len("class"), *(len(n) for n in class_names), *(len(s) for s in subsets))

    def pct(x: float) -> str:
        return "   n/a" if math.isnan(x) else f"{100 * x:6.2f}"

    header = f"| {'class':<{width}} |    IoU |    Acc |" + "".join(f" {s[4:]:>3} |" for s in marks)
    rule = "|" + "-" * (width + 2) + "|--------|--------|" + "-----|" * len(marks)
    lines = [header, rule]
    for c, name in enumerate(class_names):
        flags = "".join(f" {'x' if c in SUBSETS[s] else '':>3} |" for s in marks)
        lines.append(f"| {name:<{width}} | {pct(iou[c])} | {pct(acc[c])} |{flags}")
    lines.append(rule)
    summary = scores(cm, subsets)
    for name in subsets:
        lines.append(f"| {name:<{width}} | {pct(summary[name])} |        |" + "     |" * len(marks))
    lines.append(f"| {'aAcc':<{width}} |        | {pct(summary['aAcc'])} |" + "     |" * len(marks))
    return "\n".join(lines)
