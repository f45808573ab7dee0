"""Convert a released dataset's labels to train ids and write its class statistics.

    python -m fastuda.data.convert {gta,synthia,cityscapes,mapillary} ROOT [--workers N]

For each label it writes ``*_labelTrainIds.png`` next to the released file
(8-bit grey, 255 = ignore), then ``sample_class_stats.json``,
``sample_class_stats_dict.json`` and ``samples_with_class.json`` at ROOT for
rare class sampling (fastuda.data.stats has the formats). Cityscapes converts
train and val, with statistics from train only (as published). Mapillary
converts validation and training, whichever are there, with statistics of
every label it converts (HRDA's ``tools/convert_datasets/mapillary.py``).
ACDC, Dark Zurich and BDD100K ship train-id labels: there is nothing to convert.

Conversion is optional: the loaders map released labels on the fly. It makes
loading a little cheaper and gives rare class sampling its statistics.

- Parallel (``--workers``, default: the CPU count, at most 16), with a progress bar.
- Atomic: every file is written under a temporary name and renamed, so an
  interrupted run leaves complete files only.
- Idempotent: a label whose ``_labelTrainIds.png`` exists and is not older than
  the released label is done. A second run skips it (its counts come from the
  previous JSON, or from the train-id file when that JSON is missing) and
  rewrites no file whose content would not change.
- Strict: every label is decoded and every image's PNG header and end are
  checked; all failures are listed together, naming each file, and then the
  run fails without writing the statistics.
"""

import argparse
import importlib
import sys

from fastuda.errors import UserError, cli

DATASETS = ("gta", "synthia", "cityscapes", "mapillary")
# The conversion (torch, the loaders) lives in ._convert, imported once the arguments are checked,
# as in train / evaluate / predict (issue 20 #9); convert() and ConvertReport are re-exported here.
_LAZY = ("ConvertReport", "convert")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module("fastuda.data._convert"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastuda.data.convert",
        description="Write *_labelTrainIds.png and the rare-class-sampling statistics "
        "(sample_class_stats.json, samples_with_class.json) of a released dataset.",
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("root", help="the dataset folder as released (see docs/datasets.md)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@cli
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    from ._convert import convert  # torch and the loaders: after the argument checks

    try:
        report = convert(args.dataset, args.root, args.workers, progress=not args.quiet)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # names the dataset and the files
        raise UserError(str(e)) from None
    print(
        f"{args.dataset}: converted {report.converted} labels, {report.counted + report.reused} already done "
        f"({report.reused} with known statistics); statistics of {report.samples} samples"
    )
    for path in report.written:
        print(f"wrote {path}")
    if not report.written:
        print(f"statistics in {args.root} unchanged")
    if report.size_notes:
        print(
            f"note: {len(report.size_notes)} images differ in size from their label; training and evaluation "
            "refuse such pairs (a label must match its image pixel for pixel), e.g.:"
        )
        for note in report.size_notes[:5]:
            print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
