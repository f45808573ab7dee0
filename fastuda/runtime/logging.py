"""The run's log: one JSON record per line in ``log.jsonl``, TensorBoard events in ``tb/``,
prediction grids in ``predictions/`` and ``curves.png`` at the end; ``tee_output`` keeps a copy
of what the run prints in ``train.log``."""

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import fastuda
from fastuda._io import write_text
from fastuda.runtime.pictures import save_curves, save_png

_said_no_tensorboard = False


def _scalars(record: dict, prefix: str = ""):
    """(tag, value) for every number in ``record``, nested dicts flattened as ``eval/mIoU``."""
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _scalars(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield tag, value


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]  # the source tree of this fastuda (editable install / checkout)
    if not (root / ".git").exists():  # installed into site-packages: a repository around it is not fastuda's
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def run_metadata(argv: list[str] | None = None) -> dict:
    """What produced a run, for ``config.json``: fastuda's version, the git commit of its
    source tree when it is a checkout (``git_dirty``: uncommitted changes to tracked files),
    the command line, and the torch / Python versions."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):  # `python -m fastuda.train` leaves the module's path in argv[0]
        module = Path(argv[0]).resolve()
        package = Path(fastuda.__file__).resolve().parent
        if module.is_relative_to(package):
            argv = ["python", "-m", ".".join(("fastuda", *module.relative_to(package).with_suffix("").parts)), *argv[1:]]
    meta = {"fastuda_version": fastuda.__version__, "git_commit": _git("rev-parse", "HEAD"),
            "command": shlex.join(argv), "cwd": os.getcwd(), "torch": torch.__version__,
            "python": sys.version.split()[0], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    if meta["git_commit"] is not None:
        meta["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    else:
        del meta["git_commit"]
    return meta


def _cut_log(path: Path, last: int) -> None:
    """Keeps the records of iterations <= ``last`` (a resumed run rewrites what follows), and
    drops a line torn by a kill; rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iter"] <= last:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(line + "\n" for line in kept))


class RunLogger:
    """JSONL always; TensorBoard when installed (it is a dependency: the first logger of a
    process without it says once that TensorBoard logging is off). A fresh run
    (``resume_at=None``) starts an empty log; a run resumed at iteration s keeps what was
    logged up to s and nothing after."""

    def __init__(self, out: Path, enabled: bool = True, resume_at: int | None = None):
        self.out = Path(out)
        self.enabled = enabled
        self.file = self.tb = None
        if not enabled:
            return
        path = self.out / "log.jsonl"
        if resume_at is not None:
            _cut_log(path, resume_at)
        self.file = open(path, "a" if resume_at is not None else "w", encoding="utf-8")
        try:  # optional, and a second to import: only for a run that logs
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            global _said_no_tensorboard
            if not _said_no_tensorboard:
                _said_no_tensorboard = True
                print(f"fastuda: TensorBoard logging is off ({error}); `pip install tensorboard` turns it on. "
                      "log.jsonl and the PNGs are written anyway.", file=sys.stderr, flush=True)  # fmt: skip
        else:
            # purge_step: TensorBoard drops older events from that step on (a fresh run: all of them)
            purge = 0 if resume_at is None else resume_at + 1
            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=purge)

    def log(self, iteration: int, record: dict) -> None:
        """One line of ``log.jsonl``; every number (nested ones too, e.g. ``eval/mIoU``,
        ``iou/road``) becomes a TensorBoard scalar."""
        if self.file:
            self.file.write(json.dumps({"iter": iteration, **record}) + "\n")
            self.file.flush()
        if self.tb:
            for tag, value in _scalars(record):
                self.tb.add_scalar(tag, value, iteration)

    def log_image(self, iteration: int, tag: str, image) -> Path | None:
        """Saves a PIL image as ``OUT/<tag>/iter_<iteration>.png`` and to TensorBoard."""
        if not self.enabled:
            return None
        path = self.out / tag / f"iter_{iteration}.png"
        save_png(image, path)
        if self.tb:
            self.tb.add_image(tag, np.asarray(image.convert("RGB")), iteration, dataformats="HWC")
            self.tb.flush()
        return path

    def close(self) -> None:
        """Closes the log and draws ``OUT/curves.png`` from the whole ``log.jsonl`` (resumed parts included)."""
        if self.file:
            self.file.close()
            self.file = None
            save_curves(self.out / "log.jsonl", self.out / "curves.png")
        if self.tb:
            self.tb.close()
            self.tb = None


class _Tee:
    """Writes to a stream and appends the same text to a file. Carriage-return redraws
    (tqdm's bar) keep only their last state in the file."""

    def __init__(self, stream, file):
        self.stream, self.file, self.pending = stream, file, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.file.write(line.rsplit("\r", 1)[-1] + "\n")
        if lines:
            self.file.flush()
        return n

    def flush(self) -> None:
        self.stream.flush()

    def finish(self) -> None:
        tail = self.pending.rsplit("\r", 1)[-1]
        if tail:
            self.file.write(tail + "\n")
        self.pending = ""

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the real stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee_output(path: Path, header: str | None = None):
    """Copies stdout and stderr to ``path`` (appended, so a resumed run keeps its history)
    while the block runs; an exception that ends the block is written there too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {header or ''}".rstrip() + "\n")
        out, err = _Tee(sys.stdout, file), _Tee(sys.stderr, file)
        sys.stdout, sys.stderr = out, err
        try:
            yield path
        except BaseException as error:
            if not isinstance(error, SystemExit) or error.code not in (0, None):
                out.finish()
                err.finish()
                file.write("".join(traceback.format_exception(error)))
            raise
        finally:
            sys.stdout, sys.stderr = out.stream, err.stream
            out.finish()
            err.finish()
