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


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_train_help_lists_the_presets_without_markup():
    """Issue 20 #8: --help showed the docstring's ``markup`` and no presets."""
    from fastuda.config import PRESETS

    result = _run("fastuda.train", "--help")
    assert result.returncode == 0 and "``" not in result.stdout
    assert "presets: " + ", ".join(PRESETS) in result.stdout and "--list-keys [PRESET]" in result.stdout
    help_text = _run("fastuda.evaluate", "--help").stdout
    assert "checkpoint            a fastuda training checkpoint" in help_text


def test_train_list_keys_prints_every_key_with_its_value_and_meaning():
    """Issue 20 #8: ``--list-keys [PRESET]``: one line per key, ``key=value  description``."""
    from fastuda.config import all_keys, preset

    for argv, cfg in ((["--list-keys"], None), (["--list-keys", "hrda_gta2cs", "max_iters=7"], preset("hrda_gta2cs"))):
        result = _run("fastuda.train", *argv)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert [line.split("=", 1)[0] for line in lines] == all_keys()
        for line in lines:
            assert len(line.split("  ")) > 1 and line.split("  ")[-1].strip(), f"no description: {line}"
    rows = dict(line.split("=", 1) for line in lines)
    assert rows["max_iters"].startswith("7 ") and rows["hrda.enabled"].startswith(f"{cfg.hrda.enabled} ")
    assert "training iterations" in rows["max_iters"] and rows["data.recipe"].startswith("'hrda' ")
