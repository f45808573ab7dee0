"""Start-up checks of a dataset's files, and the error a bad file raises mid-run.

``check_files(dataset, key)`` reads only the headers of every image and label (size,
PNG bit depth and colour type) and the last bytes of each file (a complete PNG ends
with IEND, a complete JPEG with EOI), in parallel with a progress bar for large sets.
It catches truncated or foreign files, labels of the wrong kind and labels whose size
differs from their image before the first iteration: GTA5's 24,966 pairs take seconds,
where decoding them all would take minutes.

``DataFileError`` is the one-line error of a file that fails later (the disk changed
mid-run). It keeps its one line when raised in a DataLoader worker: torch re-raises a
worker's exception in the main process as ``type(e)(<the worker's whole traceback>)``,
and the constructor keeps the original message, the traceback's last line.
"""

import os
from pathlib import Path

from PIL import Image

from fastuda.errors import UserError

from ._io import _PNG_SIGNATURE, PngHeader, png_header
from ._parallel import default_workers, parallel_map

_SHOW = 3  # bad files named in the error besides the first one's message
_PARALLEL_FROM = 256  # fewer files: checked in this process (a pool costs more than it saves)
_PROGRESS_FROM = 2000  # files from which a progress bar is shown
_JPEG_EOI = b"\xff\xd9"


class DataFileError(UserError, RuntimeError):
    """A data file that cannot be used, named with what is wrong, in one line. A
    RuntimeError too, like the decoding errors of ``fastuda.data._io`` it wraps."""

    def __init__(self, message: str):
        if message.startswith("Caught ") and "Original Traceback" in message:
            # re-raised from a DataLoader worker: the last traceback line is "module.DataFileError: <message>"
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


def _head_and_tail(path: Path, head: int = 64, tail: int = 12) -> tuple[bytes, bytes]:
    try:
        with open(path, "rb") as f:
            start = f.read(head)
            f.seek(max(os.fstat(f.fileno()).st_size - tail, 0))
            return start, f.read(tail)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header; raises if it is truncated or not an image."""
    start, end = _head_and_tail(path)
    if start[:8] == _PNG_SIGNATURE:
        header = png_header(start + end, path)  # checks the IEND tail too
        return header.height, header.width
    if start[:2] == b"\xff\xd8" and not end.rstrip(b"\x00").endswith(_JPEG_EOI):
        raise RuntimeError(f"{path}: the JPEG is truncated (it does not end with an EOI marker)")
    try:
        with Image.open(path) as im:  # reads the header only
            return im.height, im.width
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ...
        raise RuntimeError(f"{path}: not an image PIL can read ({type(e).__name__})") from e


def _check_pair(item) -> str | None:
    """The problem with one (image, label, label format) triple, or None."""
    image, label, fmt = item
    try:
        size = image_size(image)
        if label is None:
            return None
        start, end = _head_and_tail(label)
        header = png_header(start + end, label)
        if fmt is not None and (header.bit_depth != fmt.bit_depth or header.color_type not in fmt.color_types):
            expected = " or ".join(PngHeader(0, 0, fmt.bit_depth, c).describe() for c in fmt.color_types)
            return f"{label}: expected {fmt.description}, a {expected} PNG; got a {header.describe()} PNG"
        if (header.height, header.width) != size:
            return (f"{label}: the label is {header.width}x{header.height} but its image {image} is "
                    f"{size[1]}x{size[0]}; a label must match its image pixel for pixel")  # fmt: skip
        return None
    except (OSError, ValueError, RuntimeError) as e:
        return str(e)


def check_files(dataset, key: str, workers: int | None = None, progress: bool | None = None) -> None:
    """Checks the header of every image and label of ``dataset`` (a ``SegmentationDataset``;
    in-memory datasets have no files); raises a ``DataFileError`` naming ``key`` (the config
    key of the dataset, e.g. ``data.source_root=data/gta``), the first bad file and the count."""
    samples = getattr(dataset, "samples", None)
    if not samples:
        return
    items = [(s.image, s.label, s.label_format) for s in samples]
    if workers is None:
        workers = default_workers() if len(items) >= _PARALLEL_FROM else 1
    if progress is None:
        progress = len(items) >= _PROGRESS_FROM
    problems = [p for p in parallel_map(_check_pair, items, workers, f"checking {dataset.name}", progress) if p]
    if problems:
        others = [p.split(": ", 1)[0] for p in problems[1 : 1 + _SHOW]]
        more = f"; also {', '.join(others)}" if others else ""
        more += f" and {len(problems) - 1 - len(others)} more" if len(problems) > 1 + len(others) else ""
        raise DataFileError(f"{key}: {len(problems)} of {len(items)} samples are unusable: {problems[0]}{more}")


__all__ = ["DataFileError", "check_files", "image_size"]
