"""Smoke runs of the command-line entry points that exist: the demo and the benchmarks."""

import pathlib
import subprocess
import sys

from fastuda import demo

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs_and_reports(capsys):
    demo.main(["--steps", "30"])
    out = capsys.readouterr().out
    assert "source-only" in out and "self-training" in out
    assert "labels equal" in out


def test_demo_scenes_have_a_domain_gap():
    import torch

    gen = torch.Generator().manual_seed(0)
    src, src_y = demo.make_scenes(4, "source", gen)
    tgt, tgt_y = demo.make_scenes(4, "target", gen)
    assert src.shape == tgt.shape == (4, 3, demo.SIZE, demo.SIZE)
    assert int(src_y.max()) < demo.NUM_CLASSES
    for c in range(demo.NUM_CLASSES):  # each class looks different in the two domains
        if (src_y == c).any() and (tgt_y == c).any():
            src_colour = src.permute(0, 2, 3, 1)[src_y == c].mean(0)
            tgt_colour = tgt.permute(0, 2, 3, 1)[tgt_y == c].mean(0)
            assert (src_colour - tgt_colour).abs().max() > 0.05


def test_benchmarks_run_without_timing():
    """The CPU-sized benchmark suite executes (no timing, smallest shape)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "-q", "-x", "--benchmark-disable", "-k", "64x64 and not compile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
