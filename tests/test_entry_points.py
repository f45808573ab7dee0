"""Smoke run of the benchmark suite (the training and evaluation CLIs: tests/test_train.py)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_benchmarks_run_without_timing():
    """The CPU-sized benchmark suite executes (no timing, smallest shape)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-q", "-x", "--benchmark-disable", "-k", "64x64 and not compile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
