"""Evaluation: whole-image or slide inference, then per-class IoU and mIoU.

    python -m fastuda.evaluate CKPT [--split val] [--device cuda] [--amp bf16] [--compile]
                               [--crop H W [--stride H W]] [--config PRESET] [key=value ...]
                               [--dataset NAME=ROOT ...]

``--dataset NAME=ROOT`` (any number; NAME one of cityscapes, acdc, acdc_<condition>,
dark_zurich, bdd100k, mapillary) scores each dataset's val split with its published test
pipeline instead of the config's target, and prints one table: a row per dataset, a column
per class (IoU, %) and the mean.

CKPT: a ``fastuda.train`` checkpoint, or a released DAFormer / HRDA / MIC ``.pth`` (its
network comes from its keys, its data and test settings from the published recipe, or from
``--config``). Published test settings: DAFormer infers on the whole 1024x512 image and
resizes the logits to the label (2048x1024); HRDA slides 1024x1024 windows with stride 512
(``slide`` mode). Evaluation uses the student (DAFormer #23). On a GPU it runs under bf16
autocast by default, as training's evaluations do (``--amp off`` for fp32).
"""

import argparse
import importlib
import sys

from fastuda.errors import UserError, cli

__all__ = ["evaluate", "main", "predict", "report", "slide_inference"]
# Re-exported, imported on first use: an argument error must come before torch (issue 20 #9).
_LAZY = {"predict": "fastuda.models.slide", "slide_inference": "fastuda.models.slide",
         "evaluate": "fastuda.runtime.evaluation", "report": "fastuda.runtime.evaluation"}  # fmt: skip
_AMP = {"None": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}  # str(autocast dtype) -> name


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastuda.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a fastuda training checkpoint (OUT/latest.pt, best.pt, iter_N.pt), a released "
                        "DAFormer / HRDA / MIC .pth, an mmseg file or a Hugging Face SegFormer folder")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. data.target_root=...)")
    parser.add_argument("--config", default=None, help="a preset or JSON config instead of the checkpoint's own")
    parser.add_argument("--split", default=None, choices=("val", "train"),
                        help="target split (default: the config's data.eval_split)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None,
                        help="autocast dtype (default: bf16 on GPU, off on CPU)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    parser.add_argument("--teacher", action="store_true", help="evaluate the EMA teacher instead of the student")
    parser.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="slide windows of this size (default: HRDA 1024 x 1024, DAFormer the whole image)")
    parser.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="slide stride (default: half the window)")  # fmt: skip
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME=ROOT",
                        help="score this dataset's val split (repeatable; one table, a row per dataset)")
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    for flag, value in (("--crop", args.crop), ("--stride", args.stride)):
        if value is not None and min(value) < 1:
            parser.error(f"{flag} {value[0]} {value[1]}: expected two positive sizes (H W)")
    if args.stride and not args.crop:
        parser.error("--stride needs --crop")
    from fastuda.config import parse_dataset_spec

    specs: dict[str, tuple[str, str]] = {}  # name -> (spec, root), checked before the checkpoint is read
    for spec in args.dataset:
        try:
            name, root = parse_dataset_spec(spec)
        except ValueError as e:
            raise UserError(f"--dataset {e}") from None
        if name in specs:
            raise UserError(f"--dataset {spec}: {name} is given twice; expected each dataset once")
        specs[name] = spec, root
    args.dataset = specs
    # The arguments are checked: now torch and the runtime.
    from fastuda.config import validate
    from fastuda.inference import Segmenter
    from fastuda.runtime.build import build_eval_dataset
    from fastuda.runtime.evaluation import evaluate, report

    # The dataset's test pipeline resizes the images (scale=None: no second resize here).
    seg = Segmenter.from_checkpoint(args.checkpoint, args.device, config=args.config, overrides=args.overrides,
                                    teacher=args.teacher, scale=None, amp=args.amp, compile=args.compile)  # fmt: skip
    cfg = seg.config
    if args.split:
        cfg.data.eval_split = args.split
    validate(cfg, from_pretrained=False)  # the weights come from the checkpoint
    if args.dataset:
        return _evaluate_datasets(seg, cfg, args)
    try:
        dataset, class_names = build_eval_dataset(cfg, check=True)  # every file listed, paired and checked first
    except UserError:
        raise
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"evaluation data of {args.checkpoint}: {e}") from None
    crop, stride = _slide(seg, args)
    cm = evaluate(seg.model, dataset, seg.num_classes, seg.device, crop, stride, cfg.data.eval_samples,
                  seg.autocast_dtype)  # fmt: skip
    table, result = report(cm, class_names, cfg.data.source)
    print(table)
    how = f"slide {crop[0]}x{crop[1]} stride {stride[0]}x{stride[1]}" if crop else "whole image"
    amp = _AMP[str(seg.autocast_dtype)]
    iteration = f", iteration {seg.iteration}" if seg.iteration is not None else ""
    key = "teacher" if args.teacher else "student"
    print(f"mIoU {100 * result['mIoU']:.2f} ({key}, {how}, {amp}, {len(dataset)} images{iteration})")
    return 0


def _slide(seg, args):
    crop, stride = seg.crop, seg.stride
    if args.crop:
        crop = tuple(args.crop)
        stride = tuple(args.stride) if args.stride else (max(crop[0] // 2, 1), max(crop[1] // 2, 1))
    return crop, stride


def _evaluate_datasets(seg, cfg, args) -> int:
    """``--dataset NAME=ROOT ...``: every dataset listed and checked first, then scored; one table."""
    from fastuda.runtime.build import build_named_eval_dataset
    from fastuda.runtime.evaluation import dataset_table, evaluate

    sets = {}
    for name, (spec, root) in args.dataset.items():
        if cfg.model.num_classes != 19:
            raise UserError(f"--dataset {spec}: the checkpoint predicts {cfg.model.num_classes} classes, {name} is "
                            "labelled with the 19 Cityscapes classes")  # fmt: skip
        sets[name] = build_named_eval_dataset(cfg, name, root, f"--dataset {spec}", check=True)
    crop, stride = _slide(seg, args)
    cms, sizes = {}, {}
    for name, (dataset, _) in sets.items():
        cms[name] = evaluate(seg.model, dataset, seg.num_classes, seg.device, crop, stride, cfg.data.eval_samples,
                             seg.autocast_dtype)  # fmt: skip
        sizes[name] = min(len(dataset), cfg.data.eval_samples or len(dataset))
    table, _ = dataset_table(cms, seg.class_names, cfg.data.source)
    print(table)
    how = f"slide {crop[0]}x{crop[1]} stride {stride[0]}x{stride[1]}" if crop else "whole image"
    amp = _AMP[str(seg.autocast_dtype)]
    iteration = f", iteration {seg.iteration}" if seg.iteration is not None else ""
    images = ", ".join(f"{name} {n}" for name, n in sizes.items())
    print(f"IoU and mIoU in % ({'teacher' if args.teacher else 'student'}, {how}, {amp}, images: {images}{iteration})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
