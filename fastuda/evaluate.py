"""Evaluation: whole-image or slide inference, then per-class IoU and mIoU.

    python -m fastuda.evaluate CKPT [--split val] [--device cuda] [--crop H W [--stride H W]] [key=value ...]

Published test settings: DAFormer infers on the whole 1024x512 image and
resizes the logits to the label (2048x1024); HRDA slides 1024x1024 windows
with stride 512 (``slide`` mode). Evaluation uses the student (DAFormer #23).
"""

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastuda.metrics import GTA_SUBSETS, SYNTHIA_SUBSETS, confusion_matrix, format_table, mean_iou, scores
from fastuda.models.hrda import paste_average, sliding_windows


@torch.no_grad()
def slide_inference(model: nn.Module, image: Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Logits (B, K, H, W) averaged over crop windows (mmseg ``slide_inference``), all
    windows of an image in one batched call."""
    B, _, H, W = image.shape
    boxes = sliding_windows(H, W, tuple(crop), tuple(stride))
    windows = torch.cat([image[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])  # (n*B, 3, ch, cw)
    return paste_average(_forward_full(model, windows).float(), boxes, B, (H, W))


def _forward_full(model: nn.Module, image: Tensor) -> Tensor:
    """Logits at the input size (HRDA: its own two-scale inference)."""
    if hasattr(model, "forward_pseudo"):
        return model.forward_pseudo(image)
    return F.interpolate(model(image), size=image.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def predict(model: nn.Module, image: Tensor, num_classes: int, out_size=None, crop=None, stride=None) -> Tensor:
    """Predicted classes (B, H, W) at ``out_size`` (default: the image's)."""
    if crop is not None:
        logits = slide_inference(model, image, crop, stride or crop)
    else:
        logits = _forward_full(model, image)
    if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, device="cpu", crop=None, stride=None,
             limit: int | None = None, autocast_dtype=None) -> Tensor:  # fmt: skip
    """The (K, K) confusion matrix of ``model`` over ``dataset`` (one image at a time;
    test images can differ in size). The model is put in eval mode and restored."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    try:
        for i in range(n):
            sample = dataset[i]
            image = sample["image"][None].to(device)
            label = sample["label"][None].to(device)
            with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                pred = predict(model, image, num_classes, label.shape[-2:], crop, stride)
            cm += confusion_matrix(pred, label, num_classes)
    finally:
        model.train(was_training)
    return cm


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


def test_settings(cfg) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(crop, stride) for slide inference: HRDA 1024 / 512; None (whole image) otherwise."""
    if cfg.hrda.enabled and cfg.data.target != "synthetic":
        return (1024, 1024), (512, 512)
    return None, None


def main(argv: list[str] | None = None) -> int:
    from fastuda import train

    parser = argparse.ArgumentParser(prog="python -m fastuda.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. data.target_root=...)")
    parser.add_argument("--split", default=None, help="target split (default: the config's data.eval_split)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teacher", action="store_true", help="evaluate the EMA teacher instead of the student")
    parser.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="slide windows of this size (default: HRDA 1024 x 1024, DAFormer the whole image)")
    parser.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="slide stride (default: half the window)")  # fmt: skip
    args = parser.parse_args(argv)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    from fastuda.config import apply_overrides, from_dict

    cfg = apply_overrides(from_dict(state["config"]), args.overrides)
    if args.split:
        cfg.data.eval_split = args.split
    model = train.build_segmentor(cfg, pretrained=False)
    key = "teacher" if args.teacher else "student"
    if state.get(key) is None:
        raise SystemExit(f"{args.checkpoint} holds no {key}")
    model.load_state_dict(state[key])
    model.to(args.device)
    dataset, class_names = train.build_eval_dataset(cfg)
    crop, stride = test_settings(cfg)
    if args.crop:
        crop = tuple(args.crop)
        stride = tuple(args.stride) if args.stride else (max(crop[0] // 2, 1), max(crop[1] // 2, 1))
    cm = evaluate(model, dataset, cfg.model.num_classes, args.device, crop, stride, cfg.data.eval_samples)
    table, result = report(cm, class_names, cfg.data.source)
    print(table)
    how = f"slide {crop[0]}x{crop[1]} stride {stride[0]}x{stride[1]}" if crop else "whole image"
    print(f"mIoU {100 * result['mIoU']:.2f} ({key}, {how}, {len(dataset)} images, iteration {state['iteration']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
