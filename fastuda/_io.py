"""Atomic file writes: the one way fastuda writes a file (checkpoints, logs, pictures, label PNGs,
class statistics, predictions, a Hugging Face export folder).

The content goes to ``.NAME.tmpPID`` beside ``NAME`` (the same file system, so the rename is
atomic) and is renamed over ``NAME``: a reader, a second run or a resume sees the old file or the
complete new one, never a torn one. ``durable=True`` adds the two fsyncs a power cut needs (the
file's bytes before the rename, the folder entry after it); checkpoints ask for it. A killed write
leaves only its ``.NAME.tmpPID``, a name ``fastuda.runtime.checkpoint`` recognises and removes when
a run starts. Standard library only: every layer (data, runtime, the CLIs) imports it.
"""

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """Where a write of ``path`` goes first. The pid keeps two processes (two conversion runs, two
    ranks) apart; one process never writes the same path from two threads."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = False, folder: bool = False) -> Path:
    """Calls ``write(tmp)`` and renames ``tmp`` onto ``path``; returns ``path``.

    ``durable``: fsync the new file before the rename and its folder after it (a power cut then
    leaves the old or the new file, not an empty one). ``folder``: ``tmp`` is a folder made for
    ``write`` to fill, and ``path`` must be missing or an empty folder. The parent folder is made
    when missing. On any error, KeyboardInterrupt included, the temporary is removed and the error
    propagates; ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    _remove(tmp)  # left by a killed write of this pid (pids are reused)
    try:
        if folder:
            tmp.mkdir()
        write(tmp)
        if durable and not folder:
            with open(tmp, "rb+") as f:  # rb+: Windows fsyncs only a handle open for writing
                os.fsync(f.fileno())
        if folder and path.is_dir():
            path.rmdir()  # POSIX renames over an empty folder, Windows over none: the same everywhere
        os.replace(tmp, path)
        if durable:
            fsync_folder(path.parent)
    finally:
        _remove(tmp)
    return path


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    """``text`` as UTF-8, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def fsync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (its entry is on disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # no directory handles (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
