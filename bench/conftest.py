"""Shared benchmark plumbing (pytest-benchmark).

Every op file has one ``setup(shape, provider)`` factory returning a callable
and the bytes it must move at least once; ``measure`` times it (host clock,
synchronised inside the timed function), adds CUDA-event timings, GB/s, the
fraction of this device's measured copy bandwidth and peak memory to
``extra_info``.

Providers: ``fastuda`` (the op as users call it, value checks off since they
sync), ``reference`` (fastuda.ops.reference, eager), ``reference+compile``
(the same under torch.compile). Without a GPU the shapes shrink to CPU sizes
and ``fastuda`` runs the CPU path, so the CPU figures measure dispatch and the
reference, not the kernels.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

import fastuda.ops

# bench/ and tests/ are folders of modules, not packages (docs/layout.md): pytest, or the script
# that runs a benchmark, puts bench/ first on sys.path; tests/ goes last, for the published-code
# transcriptions the benchmarks compare against (test_classmix.published_classmix).
TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = "cuda" if CUDA else "cpu"
PROVIDERS = ["fastuda", "reference", "reference+compile"]


def sync():
    if CUDA:
        torch.cuda.synchronize()


@pytest.fixture(autouse=True)
def _no_value_checks():
    previous = fastuda.ops.get_value_checks()
    fastuda.ops.set_value_checks("off")
    yield
    fastuda.ops.set_value_checks(previous)


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Device-to-device copy bandwidth in GB/s (read + write), measured here: the ceiling
    that memory-bound kernels are reported against."""
    if not CUDA:
        return None
    import triton.testing

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()  # 1 GiB
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


@pytest.fixture
def measure(benchmark, copy_bandwidth):
    def run(fn, nbytes, rounds=None, **info):
        """Times ``fn``; ``nbytes`` (None or 0 for compute-bound work) gives GB/s."""
        fn()  # warm-up (and compile for reference+compile)
        sync()
        peak = None
        if CUDA:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            sync()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20

        def timed():
            fn()
            sync()

        benchmark.pedantic(timed, rounds=rounds or (50 if CUDA else 5), warmup_rounds=2 if CUDA else 1)
        if benchmark.disabled:  # --benchmark-disable: ran once, nothing timed
            return
        seconds = benchmark.stats.stats.median
        extra = dict(info, device=torch.cuda.get_device_name() if CUDA else "cpu")
        if nbytes:  # memory-bound ops: report bandwidth
            extra["bytes"] = nbytes
            extra["GB/s"] = round(nbytes / seconds / 1e9, 1)
        if CUDA:
            import triton.testing

            ms = triton.testing.do_bench(fn, warmup=25, rep=200)
            extra["event_ms"] = round(ms, 4)
            extra["peak_extra_MiB"] = round(peak, 1)
            if nbytes:
                extra["event_GB/s"] = round(nbytes / (ms * 1e-3) / 1e9, 1)
                extra["copy_GB/s"] = round(copy_bandwidth, 1)
                extra["frac_of_copy"] = round(extra["event_GB/s"] / copy_bandwidth, 3)
        benchmark.extra_info.update(extra)

    return run


def pytest_benchmark_update_json(config, benchmarks, output_json):
    import triton

    output_json["fastuda"] = dict(
        torch=torch.__version__,
        triton=triton.__version__,
        device=torch.cuda.get_device_name() if CUDA else "cpu",
    )
