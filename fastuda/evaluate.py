"""Evaluation: whole-image or slide inference, then per-class IoU and mIoU.

    python -m fastuda.evaluate CKPT [--split val] [--device cuda] [--crop H W [--stride H W]] [key=value ...]

Published test settings: DAFormer infers on the whole 1024x512 image and
resizes the logits to the label (2048x1024); HRDA slides 1024x1024 windows
with stride 512 (``slide`` mode). Evaluation uses the student (DAFormer #23).
"""

import argparse
import sys

import torch

from fastuda.models.slide import predict, slide_inference
from fastuda.runtime.build import build_eval_dataset, build_segmentor, test_settings
from fastuda.runtime.checkpoint import load_training_checkpoint
from fastuda.runtime.evaluation import evaluate, report

__all__ = ["evaluate", "main", "predict", "report", "slide_inference"]


def main(argv: list[str] | None = None) -> int:
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
    state = load_training_checkpoint(args.checkpoint)
    from fastuda.config import apply_overrides, from_dict

    cfg = apply_overrides(from_dict(state["config"]), args.overrides)
    if args.split:
        cfg.data.eval_split = args.split
    model = build_segmentor(cfg, pretrained=False)
    key = "teacher" if args.teacher else "student"
    if state.get(key) is None:
        raise SystemExit(f"{args.checkpoint} holds no {key}")
    model.load_state_dict(state[key])
    model.to(args.device)
    dataset, class_names = build_eval_dataset(cfg)
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
