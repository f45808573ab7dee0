"""A dataset of (image, label) files read as released, and the layout scan behind it.

The loaders in gta.py, synthia.py, cityscapes.py and folder.py only describe
where a layout keeps its files; ``scan_pairs`` finds them, pairs each image
with its label and refuses anything it cannot pair. ``SegmentationDataset``
reads a pair, maps the label to train ids and runs the pipeline.

Which label file is read: the converted ``*_labelTrainIds.png`` when it exists
(written by ``python -m fastuda.data.convert``, or by cityscapesscripts for
Cityscapes), else the released label through its lookup table. Both give the
same train ids; the converted file is faster to read.

Randomness: a pipeline draws its crop, flip and cat_max_ratio re-crops from
the generator it is given. ``dataset[Draw(file, key=k)]`` (what the training
loaders' ``IterationSampler`` yields) seeds it from (``seed``, the dataset
name, k): the draw is a pure function of the seed and the global draw index,
the same in every worker process, for any number of workers, and after a
resume. ``dataset.item(file, generator)`` takes the generator from the caller
(rare class sampling does). A plain int index (a user's own DataLoader,
``make_loader``) draws from a per-process generator instead: seeded in a
DataLoader worker from the worker's seed (``get_worker_info().seed``: the
loader's base seed + worker id), so workers differ and a run is reproducible
for a given loader seed and worker count; in the main process from ``seed``
or else ``torch.initial_seed()``. The dataset name is mixed in, so a source
and a target dataset with the same seed do not crop alike.
"""

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ._io import read_image, read_label
from .labels import CITYSCAPES_CLASSES, NUM_CLASSES, LabelFormat, train_ids
from .sampler import draw_generator
from .transforms import Pipeline

_SHOW = 5  # file names quoted in an error before "and N more"


@dataclass(frozen=True)
class Sample:
    """One image and the label file read for it (paths absolute)."""

    image: Path
    # the file read: the train-id label when converted, else the released one; None: unlabelled
    label: Path | None
    label_format: LabelFormat | None
    # the released label and its format, when there is one to convert from
    raw_label: Path | None = None
    raw_format: LabelFormat | None = None
    # where the converted train-id label lives or would be written; None for
    # layouts whose labels are train ids already
    train_label: Path | None = None


class SegmentationDataset(Dataset):
    """Images with labels in Cityscapes train ids, through an optional pipeline.

    ``dataset[i]`` is a dict: ``image`` (float32 (3, h, w) normalised, or
    uint8 (3, H, W) as decoded when there is no pipeline), ``label`` (int64
    (h, w) train ids, 255 = ignore; absent for unlabelled data), ``valid_mask``
    (bool (h, w), when the pipeline has pseudo-label margins), ``index`` and
    ``name`` (the image path relative to the root).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        samples: list[Sample],
        pipeline: Pipeline | None = None,
        class_names: tuple[str, ...] = CITYSCAPES_CLASSES,
        seed: int | None = None,
    ):
        self.name = name
        self.root = Path(root)
        self.samples = samples
        self.pipeline = pipeline
        self.class_names = tuple(class_names)
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_key = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.name!r}, {str(self.root)!r}, {len(self)} samples, pipeline={self.pipeline})"

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image uint8 (3, H, W) and label uint8 (H, W) train ids (None if unlabelled), as stored."""
        sample = self.samples[index]
        image = read_image(sample.image)
        if sample.label is None:
            return image, None
        return image, torch.from_numpy(read_label(sample.label, sample.label_format))

    def read_label(self, index: int) -> np.ndarray:
        """Label uint8 (H, W) train ids at the original resolution (class statistics read this)."""
        sample = self.samples[index]
        if sample.label is None:
            raise ValueError(f"{self.name}: {sample.image} has no label (the dataset is unlabelled)")
        return read_label(sample.label, sample.label_format)

    def __getitem__(self, index: int) -> dict:
        key = getattr(index, "key", None)  # a sampler's Draw: its random draws follow the draw index
        generator = None
        if self.pipeline is not None:
            generator = draw_generator(self.seed, self.name, key) if key is not None else self._worker_generator()
        return self.item(int(index), generator)

    def item(self, index: int, generator: torch.Generator | None) -> dict:
        """``dataset[index]`` with the pipeline's random draws taken from ``generator``."""
        sample = self.samples[index]
        image, label = self.read(index)
        if label is not None and tuple(label.shape) != tuple(image.shape[-2:]):
            if self.pipeline is None or self.pipeline.scale is None:
                raise ValueError(
                    f"{self.name}: label {sample.label} is {tuple(label.shape)} (H, W) but image {sample.image} "
                    f"is {tuple(image.shape[-2:])}"
                )
        if self.pipeline is None:
            out = {"image": image.contiguous()}
            if label is not None:
                out["label"] = label.long()
        else:
            out = self.pipeline(image, label, generator)
        out["index"] = index
        out["name"] = self.relative(sample.image)
        return out

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset root, with / separators (stable across machines)."""
        return Path(path).relative_to(self.root).as_posix()

    def _worker_generator(self) -> torch.Generator:
        info = get_worker_info()
        # The key changes in a new process or worker, so a generator created in
        # the parent (e.g. by an earlier workers=0 pass) is never shared.
        key = (os.getpid(), None if info is None else info.seed)
        if self._generator is None or self._generator_key != key:
            if info is not None:
                base = info.seed
            else:
                base = self.seed if self.seed is not None else torch.initial_seed()
            seed = (base ^ (zlib.crc32(self.name.encode()) << 32)) % (1 << 63)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_key = key
        return self._generator


def check_dir(dataset: str, path: Path, layout: str, root: Path) -> Path:
    """``path`` must be a directory; the error names it and the expected layout."""
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{dataset} root {root} {what}; expected the released layout: {layout}")
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: {path} is missing; expected the released layout under {root}: {layout}")
    return path


def _collect(
    dataset: str, directory: Path, pattern: str, suffixes: str | tuple[str, ...], exclude: tuple[str, ...] = ()
) -> dict[str, Path]:
    """{key: path} of the files ``directory/pattern`` ending in one of ``suffixes``;
    key = the path relative to ``directory`` without the suffix."""
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    found = {}
    for path in directory.glob(pattern):
        name = path.name
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if suffix is None or any(name.endswith(e) for e in exclude) or not path.is_file():
            continue
        key = path.relative_to(directory).as_posix()[: -len(suffix)]
        if key in found:
            raise ValueError(f"{dataset}: {found[key]} and {path} are two files for the same sample")
        found[key] = path
    return found


def _unmatched(message: str, keys: list[str], example) -> ValueError:
    keys = sorted(keys)
    shown = ", ".join(str(example(k)) for k in keys[:_SHOW])
    more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ValueError(f"{message} ({len(keys)}): {shown}{more}")


def scan_pairs(
    dataset: str,
    root: Path,
    layout: str,
    image_dir: Path,
    image_suffix: str | tuple[str, ...],
    label_dir: Path | None,
    raw_suffix: str | None,
    raw_format: LabelFormat | None,
    train_suffix: str | None,
    pattern: str = "*",
    num_classes: int = NUM_CLASSES,
) -> list[Sample]:
    """Pairs every ``image_dir/pattern + image_suffix`` with its label, sorted by name.

    A label is ``label_dir/<key> + train_suffix`` (train ids) when present,
    else ``label_dir/<key> + raw_suffix`` (mapped by ``raw_format``). Either
    suffix may be None. ``label_dir=None`` makes an unlabelled dataset. Raises
    if the root or a directory is missing, there are no images, or any image
    lacks a label or any label lacks an image.
    """
    root = Path(root)
    check_dir(dataset, image_dir, layout, root)
    image_suffixes = (image_suffix,) if isinstance(image_suffix, str) else tuple(image_suffix)
    images = _collect(dataset, image_dir, pattern, image_suffixes)
    if not images:
        wanted = " or ".join(str(image_dir / (pattern + s)) for s in image_suffixes)
        raise ValueError(f"{dataset}: no images {wanted} (empty split); expected {layout}")
    if label_dir is None:
        return [Sample(images[k], None, None) for k in sorted(images)]

    check_dir(dataset, label_dir, layout, root)
    trained = _collect(dataset, label_dir, pattern, train_suffix) if train_suffix else {}
    exclude = (train_suffix,) if train_suffix else ()
    raw = _collect(dataset, label_dir, pattern, raw_suffix, exclude) if raw_suffix else {}
    labels = raw.keys() | trained.keys()

    def expected_label(key: str) -> str:
        names = [label_dir / (key + s) for s in (raw_suffix, train_suffix) if s]
        return " or ".join(map(str, names))

    if missing := images.keys() - labels:
        raise _unmatched(
            f"{dataset}: images without a label", list(missing), lambda k: f"{images[k]} (no {expected_label(k)})"
        )
    if orphans := labels - images.keys():
        raise _unmatched(
            f"{dataset}: labels without an image",
            list(orphans),
            lambda k: f"{raw.get(k) or trained[k]} (no {image_dir / (k + image_suffixes[0])})",
        )
    samples = []
    for key in sorted(images):
        train_path = label_dir / (key + train_suffix) if train_suffix else None
        raw_path = raw.get(key)
        if key in trained:
            samples.append(Sample(images[key], trained[key], train_ids(num_classes), raw_path, raw_format, train_path))
        else:
            samples.append(Sample(images[key], raw_path, raw_format, raw_path, raw_format, train_path))
    return samples
