"""Scoring a model over a split: the confusion matrix, then per-class IoU and mIoU."""

import math

import torch
from torch import Tensor, nn

from fastuda.metrics import (GTA_SUBSETS, SYNTHIA_SUBSETS, class_iou, confusion_matrix, format_table, mean_iou,
                             scores)  # fmt: skip
from fastuda.models.slide import predict


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, device="cpu", crop=None, stride=None,
             limit: int | None = None, autocast_dtype=None, shard: tuple[int, int] = (0, 1)) -> Tensor:  # fmt: skip
    """The (K, K) confusion matrix of ``model`` over ``dataset`` (one image at a time;
    test images can differ in size). The model is put in eval mode and restored.
    ``shard=(rank, world)``: images rank, rank + world, ...; the sum over ranks is the whole."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    try:
        for i in range(shard[0], n, shard[1]):
            sample = dataset[i]
            image = sample["image"][None].to(device)
            label = sample["label"][None].to(device)
            with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                pred = predict(model, image, label.shape[-2:], crop, stride)
            cm += confusion_matrix(pred, label, num_classes)
    finally:
        model.train(was_training)
    return cm


def percent(score: float) -> float | None:
    """A score as a run records it (``log.jsonl``, TensorBoard, ``best.json``, the tables): percent,
    as people read and papers report mIoU; None (JSON null, no TensorBoard point) for n/a, a class
    in neither the labels nor the predictions, which a 0 would pass off as a total miss."""
    return None if math.isnan(score) else 100 * score


def report(cm: Tensor, class_names, source: str = "gta") -> tuple[str, dict[str, float]]:
    """(table, {"mIoU": ..., per-subset means}) for a confusion matrix."""
    if cm.shape[0] == 19:
        subsets = SYNTHIA_SUBSETS if source == "synthia" else GTA_SUBSETS
        result = scores(cm.cpu(), subsets)
        result["mIoU"] = result["mIoU16"] if source == "synthia" else result["mIoU19"]
        return format_table(cm.cpu(), class_names, subsets), result
    miou = mean_iou(cm.cpu())
    table = format_table(cm.cpu(), class_names, subsets=())
    return table + f"\n| mIoU {100 * miou:6.2f}", {"mIoU": miou}


def dataset_table(cms: dict, class_names, source: str = "gta") -> tuple[str, dict[str, float]]:
    """One table for several datasets: a row per dataset (its name, the keys of ``cms``, each a
    (K, K) confusion matrix), a column per class (IoU in %, n/a where a class is in neither the
    labels nor the predictions), then each row's mIoU (``report``'s: mIoU16 for a Synthia source).
    Returns the table and {name: mIoU} (fractions)."""
    names = [str(n) for n in class_names]
    width = max(len("dataset"), *(len(str(k)) for k in cms))
    cols = [max(len(n), 6) for n in names]

    def pct(x: float, w: int) -> str:
        return f"{'n/a':>{w}}" if math.isnan(x) else f"{100 * x:{w}.2f}"

    header = f"| {'dataset':<{width}} | " + " | ".join(f"{n:>{w}}" for n, w in zip(names, cols)) + " |   mIoU |"
    rule = "|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 2) for w in cols) + "|--------|"
    lines, means = [header, rule], {}
    for name, cm in cms.items():
        iou = class_iou(cm.cpu()).tolist()
        means[name] = report(cm, class_names, source)[1]["mIoU"]
        cells = " | ".join(pct(v, w) for v, w in zip(iou, cols))
        lines.append(f"| {str(name):<{width}} | {cells} | {pct(means[name], 6)} |")
    return "\n".join(lines), means
