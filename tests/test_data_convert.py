"""`python -m fastuda.data.convert`: train-id labels, the published RCS statistics files,
idempotence, atomic writes, error reporting; statistics in memory; RCS helpers."""

import json
import os

import numpy as np
import pytest
import torch
from _published_data import assert_converted_as_published, published_convert_to_train_id
from PIL import Image

from fastuda.data import (
    SampleStats,
    _io,
    cityscapes,
    compute_class_stats,
    gta5,
    labels,
    rcs_probabilities,
    read_class_stats,
    samples_with_class,
    synthia,
)
from fastuda.data._fake import write_fake_cityscapes, write_fake_gta, write_fake_synthia
from fastuda.data._parallel import parallel_map
from fastuda.data.convert import convert, main


def published_rcs_class_probs(sample_class_stats: list, temperature: float):
    """mmseg/datasets/uda_dataset.py ``get_rcs_class_probs``, transcribed (stats list in)."""
    overall_class_stats = {}
    for s in sample_class_stats:
        s = dict(s)
        s.pop("file")
        for c, n in s.items():
            c = int(c)
            if c not in overall_class_stats:
                overall_class_stats[c] = n
            else:
                overall_class_stats[c] += n
    overall_class_stats = {k: v for k, v in sorted(overall_class_stats.items(), key=lambda item: item[1])}
    freq = torch.tensor(list(overall_class_stats.values()))
    freq = freq / torch.sum(freq)
    freq = 1 - freq
    freq = torch.softmax(freq / temperature, dim=-1)
    return list(overall_class_stats.keys()), freq.numpy()


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_convert_gta_matches_the_published_converter(tmp_path, capsys):
    root = write_fake_gta(tmp_path / "gta", count=4, seed=5)
    before = [gta5(root)[i]["label"] for i in range(4)]
    assert main(["gta", str(root), "--workers", "2"]) == 0
    out = capsys.readouterr()
    assert "converted 4 labels" in out.out and "convert gta" in out.err  # the progress bar

    expected_stats = []
    for i in range(1, 5):
        raw = np.array(Image.open(root / "labels" / f"{i:05d}.png"))
        rel = f"labels/{i:05d}_labelTrainIds.png"
        want, stats = published_convert_to_train_id(raw, labels.CITYSCAPES_ID_TO_TRAIN_ID, rel)
        written = Image.open(root / rel)
        assert written.mode == "L"
        np.testing.assert_array_equal(np.array(written), want)
        expected_stats.append(stats)
    assert_converted_as_published(root, expected_stats, gta5(root), before)
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def test_convert_is_idempotent(tmp_path, capsys):
    root = write_fake_gta(tmp_path / "gta", count=3, seed=6)
    first = convert("gta", root, workers=1, progress=False)
    assert (first.converted, first.counted, first.reused, len(first.written)) == (3, 0, 0, 3)
    files = _snapshot(root)

    second = convert("gta", root, workers=2, progress=False)
    assert (second.converted, second.counted, second.reused, second.written) == (0, 0, 3, [])
    assert _snapshot(root) == files  # nothing rewritten

    # a missing train-id file is redone alone; a missing JSON is rebuilt from the train-id files
    texts = {p.name: p.read_text() for p in root.glob("*.json")}
    (root / "labels" / "00002_labelTrainIds.png").unlink()
    (root / "sample_class_stats.json").unlink()
    third = convert("gta", root, workers=1, progress=False)
    assert (third.converted, third.counted, third.reused) == (1, 2, 0)
    assert {p.name: p.read_text() for p in root.glob("*.json")} == texts

    # a released label newer than its train-id file is converted again
    raw = root / "labels" / "00003.png"
    os.utime(raw, ns=(raw.stat().st_atime_ns, (root / "labels" / "00003_labelTrainIds.png").stat().st_mtime_ns + 10**9))
    assert convert("gta", root, workers=1, progress=False).converted == 1


def test_convert_synthia_and_cityscapes(tmp_path):
    root = write_fake_synthia(tmp_path / "syn", count=3, seed=7)
    before = [synthia(root)[i]["label"] for i in range(3)]
    report = convert("synthia", root, workers=2, progress=False)
    assert report.converted == 3 and report.samples == 3
    ds = synthia(root)
    assert ds.samples[0].label == root / "GT" / "LABELS" / "0000000_labelTrainIds.png"
    for i in range(3):
        torch.testing.assert_close(ds[i]["label"], before[i])
    stats = read_class_stats(root)
    assert [s.file for s in stats] == [f"GT/LABELS/{i:07d}_labelTrainIds.png" for i in range(3)]
    assert all(set(s.counts) <= set(labels.SYNTHIA_16) for s in stats)

    root = write_fake_cityscapes(tmp_path / "cs", {"train": 3, "val": 2}, seed=8)
    report = convert("cityscapes", root, workers=1, progress=False)
    assert report.converted == 5 and report.samples == 3  # statistics of train only, as published
    assert len(list(root.glob("gtFine/val/*/*_gtFine_labelTrainIds.png"))) == 2
    stats = read_class_stats(root)
    assert all(s.file.startswith("gtFine/train/") and s.file.endswith("_gtFine_labelTrainIds.png") for s in stats)
    assert all(s.label.name.endswith("_labelTrainIds.png") for s in cityscapes(root, "val").samples)


def test_convert_reports_every_bad_file_and_writes_no_statistics(tmp_path, capsys):
    root = write_fake_gta(tmp_path / "gta", count=4)
    for name in ("00002.png", "00004.png"):
        path = root / "labels" / name
        path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(RuntimeError, match="2 of 4 files failed") as info:
        convert("gta", root, workers=2, progress=False)
    assert str(root / "labels" / "00002.png") in str(info.value) and str(root / "labels" / "00004.png") in str(
        info.value
    )
    assert not (root / "sample_class_stats.json").exists()
    assert (root / "labels" / "00001_labelTrainIds.png").exists()  # the good files are done (atomically)
    assert main(["gta", str(root), "--quiet"]) == 2
    assert "error: gta: 2 of 4 files failed" in capsys.readouterr().err
    assert main(["gta", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_convert_checks_images_and_notes_size_mismatches(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=2)
    image = root / "images" / "00001.png"
    image.write_bytes(image.read_bytes()[:-30])
    with pytest.raises(RuntimeError, match=f"{image}: the PNG is truncated"):
        convert("gta", root, workers=1, progress=False)
    write_fake_gta(root, count=2)  # repair
    Image.fromarray(np.zeros((50, 80, 3), np.uint8)).save(root / "images" / "00002.png")
    report = convert("gta", root, workers=1, progress=False)
    assert report.size_notes == [f"{root / 'images' / '00002.png'} is 80x50, its label 96x64"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x_labelTrainIds.png"
    _io.write_label_png(target, np.zeros((4, 5), np.uint8))
    good = target.read_bytes()

    def failing_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _io.write_label_png(target, np.ones((4, 5), np.uint8))
    assert target.read_bytes() == good  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


def test_statistics_in_memory_equal_the_converted_ones(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=4, seed=9)
    raw_ds = gta5(root)
    in_memory = compute_class_stats(raw_ds, workers=2, progress=False)
    assert [s.file for s in in_memory] == [f"labels/{i:05d}.png" for i in range(1, 5)]
    convert("gta", root, workers=1, progress=False)
    converted = read_class_stats(root, "gta")
    assert [s.counts for s in in_memory] == [s.counts for s in converted]
    assert [s.counts for s in compute_class_stats(gta5(root), workers=1, progress=False)] == [
        s.counts for s in converted
    ]
    # both name the same samples of the dataset
    assert samples_with_class(in_memory, raw_ds, 0) == samples_with_class(converted, gta5(root), 0)


def test_rcs_probabilities_match_the_published_ones(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=5, seed=10)
    convert("gta", root, workers=1, progress=False)
    entries = json.loads((root / "sample_class_stats.json").read_text())
    for temperature in (0.01, 0.1, 1.0):
        want_classes, want_probs = published_rcs_class_probs(entries, temperature)
        classes, probs = rcs_probabilities(read_class_stats(root), temperature)
        assert classes == want_classes
        assert probs.dtype == torch.float64
        np.testing.assert_allclose(probs.numpy(), want_probs, rtol=1e-5, atol=1e-7)


def test_rcs_probabilities_by_hand():
    stats = [SampleStats("a.png", {0: 800, 5: 100}), SampleStats("b.png", {0: 50, 13: 50})]
    classes, probs = rcs_probabilities(stats, temperature=0.5)
    assert classes == [13, 5, 0]  # ascending pixel count; classes never seen are left out
    freq = torch.tensor([50, 100, 850], dtype=torch.float64) / 1000
    torch.testing.assert_close(probs, torch.softmax((1 - freq) / 0.5, 0))
    assert abs(float(probs.sum()) - 1) < 1e-12 and probs[0] > probs[1] > probs[2]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rcs_probabilities(stats, 0.0)


def test_samples_with_class_uses_more_than_min_pixels(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=3)
    ds = gta5(root)
    stats = [
        SampleStats("labels/00001_labelTrainIds.png", {0: 3001, 2: 5000}),
        SampleStats("labels/00002.png", {0: 3000, 2: 4000}),  # exactly 3000: not more than 3000
        SampleStats("/somewhere/else/labels/00003_labelTrainIds.png", {0: 9000, 2: 1}),  # a published absolute path
    ]
    assert samples_with_class(stats, ds) == {0: [0, 2], 2: [0, 1]}
    with pytest.raises(ValueError, match=r"no sample has more than 6000 pixels of class 2 \(building\)"):
        samples_with_class(stats, ds, min_pixels=6000)
    with pytest.raises(ValueError, match="labels/00009.png, which is not a label of gta"):
        samples_with_class([SampleStats("labels/00009.png", {0: 1})], ds)


def test_missing_or_broken_statistics_file(tmp_path):
    root = write_fake_gta(tmp_path / "gta", count=1)
    with pytest.raises(FileNotFoundError, match=f"python -m fastuda.data.convert gta {root}.*compute_class_stats"):
        read_class_stats(root, "gta")
    (root / "sample_class_stats.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="sample_class_stats.json: expected a list"):
        read_class_stats(root)


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # import tqdm -> ImportError
    assert parallel_map(abs, [-1, -2, 3], workers=1, desc="plain") == [1, 2, 3]
    assert "plain: 3/3" in capsys.readouterr().err


def test_cli_runs_as_a_module_and_the_package_is_installed(tmp_path):
    import pathlib
    import subprocess
    import sys

    root = write_fake_cityscapes(tmp_path / "cs", {"train": 2}, seed=11)
    command = ["-m", "fastuda.data.convert", "cityscapes", str(root), "--workers", "1"]
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", *command], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "converted 2 labels" in result.stdout and (root / "samples_with_class.json").is_file()
    # setup.py installs every package under fastuda/ found by find_packages: each needs an __init__.py.
    package = pathlib.Path(__file__).resolve().parents[1] / "fastuda" / "data"
    assert (package / "__init__.py").is_file()
