"""Segment your own images with a trained checkpoint.

    python -m fastuda.predict CHECKPOINT INPUT... --out DIR [--side-by-side] [--config PRESET] [key=value ...]

INPUT: image files, folders (searched recursively for .png .jpg .jpeg .bmp .tif .tiff .webp)
and quoted globs (``'data/**/*.jpg'``). For every image, under DIR, at the image's path
relative to the folder it was found in (its file name for files and globs), as .png:

    labelTrainIds/NAME.png   train ids 0..K-1 (grey, 8 bit)
    labelIds/NAME.png        Cityscapes label ids (19-class models), for cityscapesscripts
    color/NAME.png           the image blended with the prediction in the Cityscapes palette
    side/NAME.png            image | prediction side by side (--side-by-side)

``--format acdc`` / ``--format dark_zurich`` write a benchmark's test-server submission
instead, for the test images (e.g. ``'data/acdc/rgb_anon/*/test/*/*.png'``,
``data/dark_zurich/rgb_anon/test/night``), each at its own 1920x1080, named as the image
(``GOPR0356_frame_000001_rgb_anon.png``), flat:

    labelTrainIds/NAME.png           train ids 0..18, 8 bit (both servers read train ids)
    labelTrainIds_invalid/NAME.png   dark_zurich: the same labels (no pixel declared invalid)
    confidence/NAME.png              dark_zurich: 16 bit, 65535 x the top softmax probability
    <format>_submission.zip          those folders at the top level, ready to upload

Each file is written to a temporary name and renamed, so none is ever half-written. An image
that cannot be read is reported and skipped; the others are still written, and the command
then exits with code 1 and the list of failures.
"""

from __future__ import annotations  # torch is named in annotations but imported once the arguments are checked

import argparse
import glob
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from fastuda._io import atomic_write
from fastuda.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID  # numpy only, no torch
from fastuda.errors import UserError, run_cli

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
OUTPUTS = ("labelTrainIds", "labelIds", "color", "side")

# The Cityscapes palette (cityscapesscripts labels.py), one colour per train id.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


@dataclass(frozen=True)
class Job:
    source: Path  # the image
    name: Path  # its output name, relative, with a .png suffix


def find_images(inputs: list[str]) -> list[Job]:
    """The images named by files, folders (recursive) and globs, each once, in a stable order.
    An input that names nothing, or two images that would write the same outputs, is a UserError."""
    jobs: dict[Path, Job] = {}
    names: dict[Path, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [(p, p.relative_to(path)) for p in sorted(path.rglob("*"))
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
            if not found:
                raise UserError(f"input folder {item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found = [(path, Path(path.name))]
        elif glob.has_magic(item):
            found = [(Path(p), Path(Path(p).name)) for p in sorted(glob.glob(item, recursive=True)) if Path(p).is_file()]
            if not found:
                raise UserError(f"input glob {item!r} matches no file")
        else:
            raise UserError(f"input {item}: no such file or folder")
        for source, rel in found:
            key = source.resolve()
            if key in jobs:
                continue
            name = rel.with_suffix(".png")
            if name in names:
                other = names[name]
                # the outputs are .png whatever the input's suffix: x.png and x.jpg of one folder collide
                how = ("rename one of them (outputs drop the input's suffix), or predict them into two --out "
                       "folders" if other.parent == source.parent else "pass their folders instead of the files "
                       "(outputs then keep the path below the folder)")  # fmt: skip
                raise UserError(f"inputs {other} and {source} would both write {name}; {how}")
            names[name] = source
            jobs[key] = Job(source, name)
    return list(jobs.values())


def palette(class_names) -> np.ndarray:
    """(256, 3) uint8 colours by train id: a class named like a Cityscapes class takes its colour,
    the others the Cityscapes colour of their index; 255 (ignore) is black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    for i, name in enumerate(class_names):
        j = CITYSCAPES_CLASSES.index(name) if name in CITYSCAPES_CLASSES else i % len(CITYSCAPES_PALETTE)
        table[i] = CITYSCAPES_PALETTE[j]
    return table


def train_to_label_ids() -> np.ndarray:
    """(256,) uint8 train id -> Cityscapes label id (255 -> 0, unlabeled)."""
    table = np.zeros(256, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[train_id] = label_id
    return table


def write_png(path: Path, array: np.ndarray) -> None:
    """An (H, W) or (H, W, 3) uint8 PNG, written to a temporary file and renamed into place."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_outputs(out: Path, name: Path, image: torch.Tensor, labels: torch.Tensor, colours: np.ndarray,
                  label_ids: np.ndarray | None, side_by_side: bool) -> list[Path]:  # fmt: skip
    """The outputs of one image (uint8 (3, H, W) RGB, (H, W) train ids); returns their paths."""
    train_ids = labels.numpy().astype(np.uint8)
    rgb = image.permute(1, 2, 0).numpy().astype(np.uint8)  # (H, W, 3)
    colour = colours[train_ids]  # (H, W, 3)
    overlay = (0.5 * rgb.astype(np.float32) + 0.5 * colour.astype(np.float32) + 0.5).astype(np.uint8)
    files = {"labelTrainIds": train_ids, "color": overlay}
    if label_ids is not None:
        files["labelIds"] = label_ids[train_ids]
    if side_by_side:
        files["side"] = np.concatenate([rgb, colour], axis=1)
    written = []
    for kind in OUTPUTS:
        if kind in files:
            written.append(out / kind / name)
            write_png(written[-1], files[kind])
    return written


# The test-server formats (docs/predict.md): folders written per image, and the zip uploaded.
SUBMISSION_FORMATS = {
    "acdc": ("labelTrainIds",),
    "dark_zurich": ("labelTrainIds", "labelTrainIds_invalid", "confidence"),
}
_FRAME = re.compile(r"_frame_\d{6}")  # <sequence>_frame_<6 digits>: the servers match predictions by it


def submission_name(source: Path, fmt: str) -> Path:
    """The flat file name of ``source``'s prediction in a ``fmt`` submission (the image's own
    name as .png); an image not named like a benchmark frame is a UserError."""
    if not _FRAME.search(source.name):
        raise UserError(f"{source}: not a {fmt} test image (expected a name like GOPR0356_frame_000001_rgb_anon.png, "
                        "which the server matches its ground truth by)")  # fmt: skip
    return Path(source.name).with_suffix(".png")


def write_submission(out: Path, fmt: str, name: Path, labels: torch.Tensor, probs: torch.Tensor | None) -> None:
    """One image's files of a ``fmt`` submission (``SUBMISSION_FORMATS``)."""
    train_ids = labels.numpy().astype(np.uint8)
    write_png(out / "labelTrainIds" / name, train_ids)
    if fmt == "dark_zurich":
        write_png(out / "labelTrainIds_invalid" / name, train_ids)
        conf = probs.max(0).values.numpy()  # (H, W) in [0, 1]
        write_png(out / "confidence" / name, np.round(conf * 65535).astype(np.uint16))


def zip_submission(out: Path, fmt: str) -> Path:
    """``OUT/<fmt>_submission.zip`` holding the format's folders at its top level (atomic)."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            for folder in SUBMISSION_FORMATS[fmt]:
                for f in sorted((out / folder).glob("*.png")):
                    z.write(f, f"{folder}/{f.name}")

    return atomic_write(out / f"{fmt}_submission.zip", write)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastuda.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    parser.add_argument("checkpoint", help="a fastuda checkpoint, a released DAFormer / HRDA / MIC .pth, an mmseg file")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders, globs; key=value config overrides")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=None, help="a preset or JSON config instead of the checkpoint's own")
    parser.add_argument("--side-by-side", action="store_true", help="also write image | prediction")
    parser.add_argument("--native", action="store_true", help="infer at each image's own size (no test resize)")
    parser.add_argument("--teacher", action="store_true", help="the EMA teacher instead of the student")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward (same-size images batch)")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None, help="default: bf16 on GPU, off on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    parser.add_argument("--format", choices=tuple(SUBMISSION_FORMATS), default=None,
                        help="write the benchmark's test-server submission (see docs/predict.md)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # inputs and overrides may follow options
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; expected a folder (new or existing) for the outputs")
    if args.format and (args.native or args.side_by_side):
        raise UserError(f"--format {args.format} writes the server's files at the benchmark's test scale; "
                        "drop --native / --side-by-side")  # fmt: skip
    overrides = [s for s in args.inputs if "=" in s and not Path(s).exists()]
    jobs = find_images([s for s in args.inputs if s not in overrides])
    if args.format:
        names: dict[Path, Path] = {}
        for i, job in enumerate(jobs):
            name = submission_name(job.source, args.format)
            if name in names:
                raise UserError(f"inputs {names[name]} and {job.source} would both write {name} (a submission is "
                                "flat); pass each test image once")  # fmt: skip
            names[name] = job.source
            jobs[i] = Job(job.source, name)
    # Imported once the arguments are checked: torch and the networks' modules take seconds to import.
    from fastuda.data import preset_pipeline
    from fastuda.inference import Segmenter, to_image_tensor

    seg = Segmenter.from_checkpoint(args.checkpoint, args.device, config=args.config, overrides=overrides,
                                    teacher=args.teacher, scale=None if args.native else "config", amp=args.amp,
                                    compile=args.compile)  # fmt: skip
    if args.format:
        # the benchmark's published test resize (1920x1080 at HRDA's resolution) whatever the checkpoint's
        # target, unless the config sets data.resize (as evaluation's pipelines do)
        d = seg.config.data
        seg.scale = tuple(d.resize) if d.resize else tuple(preset_pipeline(d.recipe, args.format, train=False).scale)
    print(f"{seg}: {len(jobs)} images -> {args.out}", file=sys.stderr)
    out = Path(args.out)
    colours = palette(seg.class_names)
    label_ids = train_to_label_ids() if seg.num_classes == 19 else None
    failures: list[tuple[Path, str]] = []
    bar = None
    if not args.no_progress:
        bar = tqdm(total=len(jobs), desc="predict", unit="img", dynamic_ncols=True)
    for start in range(0, len(jobs), args.batch_size):
        batch, images = [], []
        for job in jobs[start : start + args.batch_size]:
            try:
                images.append(to_image_tensor(job.source))
                batch.append(job)
            except UserError as e:
                failures.append((job.source, str(e)))
        if args.format:
            for job, (labels, probs) in zip(batch, seg.segment(images, probabilities=True) if images else []):
                write_submission(out, args.format, job.name, labels, probs)
        for job, image, labels in zip(batch, images, seg.segment(images) if images and not args.format else []):
            write_outputs(out, job.name, image, labels, colours, label_ids, args.side_by_side)
        if bar is not None:
            bar.update(len(jobs[start : start + args.batch_size]))
    if bar is not None:
        bar.close()
    done = len(jobs) - len(failures)
    print(f"wrote {done} of {len(jobs)} images to {out}", file=sys.stderr)
    if args.format and not failures:
        print(f"submission: {zip_submission(out, args.format)} (upload it: docs/predict.md)", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} of {len(jobs)} images could not be read:", file=sys.stderr)
        for source, message in failures:
            print(f"  {message}" if str(source) in message else f"  {source}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
