"""An ordered parallel map over files with a progress bar (tqdm when installed)."""

import concurrent.futures
import os
import sys
import time
from collections.abc import Callable, Sequence

import torch


def default_workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def parallel_map(
    fn: Callable,
    items: Sequence,
    workers: int,
    desc: str,
    progress: bool = True,
    initializer: Callable | None = None,
    initargs: tuple = (),
) -> list:
    """``[fn(x) for x in items]`` in ``workers`` processes (in this one when
    ``workers <= 1``), in order, with a progress bar on stderr. ``fn`` and
    ``initializer`` must be importable module-level functions. An exception
    in a worker propagates with its message."""
    bar = _progress_bar(len(items), desc, progress)
    try:
        if workers <= 1 or len(items) <= 1:
            if initializer is not None:
                initializer(*initargs)
            results = []
            for item in items:
                results.append(fn(item))
                bar.update(1)
            return results
        chunk = max(1, min(64, len(items) // (workers * 8)))
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, initializer=_init_worker, initargs=(initializer, initargs)
        ) as pool:
            results = []
            for result in pool.map(fn, items, chunksize=chunk):
                results.append(result)
                bar.update(1)
            return results
    finally:
        bar.close()


def _init_worker(initializer, initargs):
    torch.set_num_threads(1)  # one process per core already
    if initializer is not None:
        initializer(*initargs)


def _progress_bar(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return _PlainProgress(total, desc, enabled)
    return tqdm(total=total, desc=desc, unit="file", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


class _PlainProgress:
    """Without tqdm: a line on stderr at most every 2 seconds, and at the end."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.done, self.last = 0, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self.last > 2.0 or self.done == self.total):
            self.last = now
            print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
