"""Per-sample class statistics for rare class sampling (RCS), in the published formats.

DAFormer's converters (``tools/convert_datasets/{gta,synthia,cityscapes}.py``)
write three files at the dataset root; ``python -m fastuda.data.convert``
writes the same three, so the published code can read fastuda's and back:

- ``sample_class_stats.json``: a list, one entry per label file, of
  ``{"<train id>": <pixels>, ..., "file": <label file>}`` (classes with 0
  pixels left out). Counts are at the label's original resolution.
- ``sample_class_stats_dict.json``: the same as ``{<file>: {"<train id>": <pixels>}}``.
- ``samples_with_class.json``: ``{"<train id>": [[<file>, <pixels>], ...]}``,
  every file with at least one pixel of the class. The "> 3000 pixels" rule
  is applied when sampling (``samples_with_class(min_pixels=3000)``), as in
  the published ``UDADataset``.

``file`` is the train-id label's path relative to the dataset root (the
published files hold the path as given on its command line; its reader and
``samples_with_class`` here only need the name to match). For datasets that
are not converted, ``compute_class_stats`` gives the same statistics in memory.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastuda._io import write_text

from ._parallel import default_workers, parallel_map
from .dataset import SegmentationDataset

STATS_FILE = "sample_class_stats.json"
STATS_DICT_FILE = "sample_class_stats_dict.json"
SAMPLES_WITH_CLASS_FILE = "samples_with_class.json"

# RCS defaults of the published configs (rare_class_sampling=dict(min_pixels=3000, class_temp=0.01, ...)).
RCS_MIN_PIXELS = 3000
RCS_TEMPERATURE = 0.01


@dataclass(frozen=True)
class SampleStats:
    """Pixels per train id in one label file."""

    file: str  # label path relative to the dataset root
    counts: dict[int, int]  # train id -> pixel count (> 0), ascending ids


def class_counts(label: np.ndarray, num_classes: int) -> dict[int, int]:
    """{train id: pixels} of a uint8 label, classes with 0 pixels left out (255 not counted)."""
    hist = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)[:num_classes]
    return {c: int(n) for c, n in enumerate(hist) if n > 0}


_dataset: SegmentationDataset | None = None  # set in each worker by _set_dataset


def _set_dataset(dataset: SegmentationDataset | None) -> None:
    global _dataset
    _dataset = dataset


def _count(index: int) -> SampleStats:
    sample = _dataset.samples[index]
    counts = class_counts(_dataset.read_label(index), _dataset.num_classes)
    return SampleStats(_dataset.relative(sample.label), counts)


def compute_class_stats(
    dataset: SegmentationDataset, workers: int | None = None, progress: bool = True
) -> list[SampleStats]:
    """The class statistics of every label of ``dataset``, computed in memory.

    For datasets without ``sample_class_stats.json`` (not converted, or your
    own). Reads each label once at its original resolution, in ``workers``
    processes (default: the CPU count, at most 16).
    """
    workers = default_workers() if workers is None else workers
    try:
        return parallel_map(
            _count, range(len(dataset)), workers, f"class statistics {dataset.name}", progress, _set_dataset, (dataset,)
        )
    finally:
        _set_dataset(None)  # the serial path set it in this process


def stats_json(stats: list[SampleStats]) -> dict[str, str]:
    """The three published JSON files as {file name: text}, in the published key order."""
    entries = [{**{str(c): n for c, n in s.counts.items()}, "file": s.file} for s in stats]
    by_file = {s.file: {str(c): n for c, n in s.counts.items()} for s in stats}
    with_class: dict[str, list] = {}
    for s in stats:  # classes in order of first appearance, as the published loop builds it
        for c, n in s.counts.items():
            with_class.setdefault(str(c), []).append([s.file, n])
    return {
        STATS_FILE: json.dumps(entries, indent=2),
        STATS_DICT_FILE: json.dumps(by_file, indent=2),
        SAMPLES_WITH_CLASS_FILE: json.dumps(with_class, indent=2),
    }


def write_class_stats(root, stats: list[SampleStats]) -> list[Path]:
    """Writes the three JSON files at ``root``, each atomically; returns the files
    that changed (a file whose content is already the same is not rewritten)."""
    written = []
    for name, text in stats_json(stats).items():
        path = Path(root) / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        write_text(path, text)
        written.append(path)
    return written


def read_class_stats(root, dataset: str = "<dataset>") -> list[SampleStats]:
    """``root/sample_class_stats.json`` (fastuda's or the published converter's)."""
    path = Path(root) / STATS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Write it with `python -m fastuda.data.convert {dataset} {root}`, "
            "or compute the statistics in memory with fastuda.data.compute_class_stats(dataset)"
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        stats = []
        for entry in entries:
            entry = dict(entry)
            file = entry.pop("file")
            stats.append(SampleStats(str(file), {int(c): int(n) for c, n in entry.items()}))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            f'{path}: expected a list of {{"<class>": <pixels>, ..., "file": <path>}} entries ({type(e).__name__}: {e})'
        ) from e
    return stats


def rcs_probabilities(stats: list[SampleStats], temperature: float = RCS_TEMPERATURE) -> tuple[list[int], torch.Tensor]:
    """RCS class distribution: P(c) = softmax((1 - f_c) / T) over the classes in ``stats``.

    f_c is class c's share of all counted pixels. Classes with no pixel in
    ``stats`` are left out (they could never be sampled). Returns the classes
    in the published order (ascending pixel count; ties in order of first
    appearance) and float64 probabilities summing to 1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    totals: dict[int, int] = {}
    for s in stats:
        for c, n in s.counts.items():
            totals[c] = totals.get(c, 0) + n
    if not totals:
        raise ValueError("the class statistics count no pixel of any class")
    classes = sorted(totals, key=totals.get)  # stable: ties keep first-appearance order
    pixels = torch.tensor([totals[c] for c in classes], dtype=torch.float64)
    freq = pixels / pixels.sum()
    return classes, torch.softmax((1 - freq) / temperature, dim=0)


def samples_with_class(
    stats: list[SampleStats], dataset: SegmentationDataset, min_pixels: int = RCS_MIN_PIXELS
) -> dict[int, list[int]]:
    """{class: indices into ``dataset`` of the samples with more than ``min_pixels`` of it}.

    Every class in ``stats`` must have at least one such sample (the published
    ``UDADataset`` asserts the same); otherwise the error names the class.
    Entries are matched to samples by their label path relative to the root,
    or by file name (the published files hold the converter's paths).
    """
    by_path: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for i, sample in enumerate(dataset.samples):
        for path in (sample.label, sample.train_label, sample.raw_label):
            if path is not None:
                by_path[dataset.relative(path)] = i
                by_name[Path(path).name] = i
    result: dict[int, list[int]] = {}
    for s in stats:
        index = by_path.get(s.file, by_name.get(Path(s.file).name))
        if index is None:
            raise ValueError(
                f"class statistics name {s.file}, which is not a label of {dataset.name} at {dataset.root} "
                "(statistics of another dataset or split? convert again)"
            )
        for c, n in s.counts.items():
            result.setdefault(c, [])
            if n > min_pixels:
                result[c].append(index)
    if empty := sorted(c for c, idx in result.items() if not idx):
        names = [f"{c} ({dataset.class_names[c]})" if c < dataset.num_classes else str(c) for c in empty]
        raise ValueError(
            f"{dataset.name}: no sample has more than {min_pixels} pixels of class {', '.join(names)}; "
            "lower min_pixels or leave these classes out of rare class sampling"
        )
    return dict(sorted(result.items()))
