"""The conversion behind ``python -m fastuda.data.convert``, whose docstring says what it
writes. It lives apart from the command line so that argument errors come before torch."""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ._io import png_header, read_label, write_label_png
from ._parallel import default_workers, parallel_map
from .cityscapes import cityscapes
from .convert import DATASETS
from .dataset import SegmentationDataset
from .gta import gta5
from .labels import LabelFormat, train_ids
from .mapillary import mapillary
from .stats import SampleStats, class_counts, read_class_stats, write_class_stats
from .synthia import synthia

_SHOW = 20  # failures listed before "and N more"


@dataclass(frozen=True)
class _Task:
    image: Path
    raw: Path | None  # the released label (None: only the train-id file exists)
    raw_format: LabelFormat | None
    train: Path  # the train-id label to write or read
    convert: bool  # False: already converted, only count
    num_classes: int


@dataclass
class ConvertReport:
    """What a run did."""

    converted: int = 0  # labels written
    counted: int = 0  # already converted, counted from the train-id file
    reused: int = 0  # already converted, counts taken from the previous statistics
    samples: int = 0  # samples in the statistics
    written: list[Path] = field(default_factory=list)  # statistics files (re)written
    size_notes: list[str] = field(default_factory=list)  # images whose size differs from their label's


def _splits(dataset: str, root: Path) -> list[tuple[SegmentationDataset, bool]]:
    """(split, whether its counts go into the statistics)."""
    if dataset == "gta":
        return [(gta5(root), True)]
    if dataset == "synthia":
        return [(synthia(root), True)]
    if dataset == "mapillary":
        present = [s for s in ("validation", "training") if (root / s).is_dir()]
        return [(mapillary(root, s), True) for s in present or ["validation"]]  # none: the error names validation/
    splits = [(cityscapes(root, "train"), True)]
    if (root / "leftImg8bit" / "val").is_dir() or (root / "gtFine" / "val").is_dir():
        splits.append((cityscapes(root, "val"), False))
    else:
        print(f"cityscapes: no val split under {root}; converting train only", file=sys.stderr)
    return splits


def _is_done(train: Path, raw: Path | None) -> bool:
    try:
        train_time = train.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    return raw is None or train_time >= raw.stat().st_mtime_ns


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header; also checks the file is complete."""
    with open(path, "rb") as f:
        head = f.read(33)
        f.seek(max(os.fstat(f.fileno()).st_size - 12, 0))
        tail = f.read(12)
    header = png_header(head + tail, path)  # png_header needs the start and the IEND end only
    return header.width, header.height


def _run(task: _Task):
    """-> (counts, size note or None, error or None); errors are returned, not raised,
    so one run reports every bad file."""
    try:
        if task.convert:
            label = read_label(task.raw, task.raw_format)
            write_label_png(task.train, label)
        else:
            label = read_label(task.train, train_ids(task.num_classes))
        note = None
        if task.image.suffix.lower() == ".png":
            size = _image_size(task.image)
            if size != (label.shape[1], label.shape[0]):
                note = f"{task.image} is {size[0]}x{size[1]}, its label {label.shape[1]}x{label.shape[0]}"
        return class_counts(label, task.num_classes), note, None
    except (OSError, ValueError, RuntimeError) as e:
        return None, None, str(e)


def convert(dataset: str, root, workers: int | None = None, progress: bool = True) -> ConvertReport:
    """Converts the labels of ``dataset`` at ``root`` and writes its class statistics."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    root = Path(root)
    workers = default_workers() if workers is None else workers
    splits = _splits(dataset, root)
    try:
        previous = {s.file: s.counts for s in read_class_stats(root, dataset)}
    except (FileNotFoundError, ValueError):
        previous = {}  # a missing or unreadable previous file: count from the labels instead

    report = ConvertReport()
    tasks, stats_slots, stats = [], [], []
    for split, in_stats in splits:
        for sample in split.samples:
            done = _is_done(sample.train_label, sample.raw_label)
            file = split.relative(sample.train_label)
            if in_stats:
                stats.append(SampleStats(file, previous.get(file, {})))
            if done and in_stats and file in previous:
                report.reused += 1
                continue
            if done and not in_stats:
                continue
            task = _Task(
                sample.image, sample.raw_label, sample.raw_format, sample.train_label, not done, split.num_classes
            )
            tasks.append(task)
            stats_slots.append(len(stats) - 1 if in_stats else None)

    results = parallel_map(_run, tasks, workers, f"convert {dataset}", progress)
    errors = [error for _, _, error in results if error is not None]
    if errors:
        shown = "\n  ".join(errors[:_SHOW])
        more = f"\n  ... and {len(errors) - _SHOW} more" if len(errors) > _SHOW else ""
        raise RuntimeError(
            f"{dataset}: {len(errors)} of {len(tasks)} files failed; statistics not written:\n  {shown}{more}"
        )
    for task, slot, (counts, note, _) in zip(tasks, stats_slots, results):
        report.converted += task.convert
        report.counted += not task.convert
        if note is not None:
            report.size_notes.append(note)
        if slot is not None:
            stats[slot] = SampleStats(stats[slot].file, counts)
    report.samples = len(stats)
    report.written = write_class_stats(root, stats)
    return report
