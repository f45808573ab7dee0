"""The run's records: log.jsonl, TensorBoard scalars and images, train.log, config.json metadata."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fastuda.runtime.logging import RunLogger, run_metadata, tee_output

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tb_scalars(path: pathlib.Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return scalars, acc.Tags()["images"]


def test_eval_records_and_images_reach_jsonl_tensorboard_and_png(tmp_path):
    pytest.importorskip("tensorboard")
    logger = RunLogger(tmp_path)
    logger.log(10, {"loss": 0.75, "lr": 1e-4})
    logger.log(20, {"eval": {"mIoU": 0.25, "mIoU16": 0.5}, "iou": {"road": 0.5, "traffic light": 0.0}})
    image = Image.fromarray(np.full((6, 8, 3), (10, 200, 30), np.uint8))
    path = logger.log_image(20, "predictions", image)
    logger.close()

    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[1] == {"iter": 20, "eval": {"mIoU": 0.25, "mIoU16": 0.5}, "iou": {"road": 0.5, "traffic light": 0.0}}
    assert path == tmp_path / "predictions" / "iter_20.png"
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    scalars, images = tb_scalars(tmp_path / "tb")
    assert scalars["eval/mIoU"] == [(20, 0.25)] and scalars["iou/traffic light"] == [(20, 0.0)]
    assert scalars["loss"] == [(10, 0.75)] and scalars["eval/mIoU16"] == [(20, 0.5)]
    assert images == ["predictions"]
    assert (tmp_path / "curves.png").is_file()  # drawn on close from log.jsonl


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path, enabled=False)
    logger.log(1, {"loss": 1.0})
    assert logger.log_image(1, "predictions", Image.new("RGB", (2, 2))) is None
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_missing_tensorboard_is_said_once(tmp_path):
    code = (
        "import sys, pathlib; sys.modules['tensorboard'] = None;"  # makes `import tensorboard` fail
        "from fastuda.runtime.logging import RunLogger;"
        f"out = pathlib.Path({str(tmp_path)!r});"
        "[RunLogger(out).close() for _ in range(3)]"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("TensorBoard logging is off") == 1, result.stderr
    assert "pip install tensorboard" in result.stderr
    assert not (tmp_path / "tb").exists()


def test_tee_output_keeps_lines_last_progress_state_and_errors(tmp_path, capsys):
    log = tmp_path / "run" / "train.log"
    before = sys.stdout, sys.stderr
    with tee_output(log, header="python -m fastuda.train demo"):
        print("hello")
        sys.stderr.write("bar  10%\rbar  50%\rbar 100%\n")
        print("no newline at the end", end="")
    with pytest.raises(RuntimeError, match="boom"):
        with tee_output(log):
            print("second run")
            raise RuntimeError("boom")
    assert (sys.stdout, sys.stderr) == before  # restored, also after the exception
    text = log.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("==== ") and lines[0].endswith("python -m fastuda.train demo")
    assert lines[1:4] == ["hello", "bar 100%", "no newline at the end"]
    assert "second run" in text and "RuntimeError: boom" in text and "Traceback" in text
    captured = capsys.readouterr()
    assert "hello" in captured.out and "bar  10%" in captured.err  # the terminal still gets everything


def test_run_metadata_version_commit_and_command():
    import fastuda

    meta = run_metadata([str(ROOT / "fastuda" / "train.py"), "demo", "max_iters=3", "--out", "runs/a b"])
    assert meta["fastuda_version"] == fastuda.__version__
    assert meta["command"] == "python -m fastuda.train demo max_iters=3 --out 'runs/a b'"
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert meta["git_commit"] == head.stdout.strip() and isinstance(meta["git_dirty"], bool)
    assert run_metadata(["tool", "x"])["command"] == "tool x"


def test_train_run_directory(tmp_path, monkeypatch):
    """One tiny run through the CLI: every output docs/training.md lists under "Run outputs"."""
    from fastuda import config, train

    out = tmp_path / "run"
    args = ["demo", "data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=1", "data.workers=0",
            "data.eval_samples=2", "max_iters=2", "eval_interval=1", "checkpoint_interval=0", "log_interval=1",
            "model.pretrained=None", "--out", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", [str(ROOT / "fastuda" / "train.py"), *args])  # as `python -m fastuda.train`
    assert train.main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["command"] == "python -m fastuda.train " + " ".join(args)
    assert cfg["run"]["fastuda_version"]
    assert config.load_config(str(out / "config.json")).max_iters == 2  # still loads as a config
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [r["iter"] for r in evals] == [1, 2]
    assert list(evals[-1]["iou"]) == ["sky", "road", "building", "vegetation", "car", "pole"]
    for it in (1, 2):
        grid = Image.open(out / "predictions" / f"iter_{it}.png")
        assert grid.width == 3 * (256 + 4)
    assert Image.open(out / "curves.png").size == (960, 600)
    log = (out / "train.log").read_text()
    assert "python -m fastuda.train demo" in log.splitlines()[0] and "mIoU" in log
    if (out / "tb").exists():  # tensorboard installed
        scalars, images = tb_scalars(out / "tb")
        assert "eval/mIoU" in scalars and "iou/road" in scalars and images == ["predictions"]


def test_eval_scores_are_percent_and_na_is_null(tmp_path, monkeypatch, capsys):
    """Issue 20 #6: log.jsonl, TensorBoard and best.json hold what the console table shows, in
    percent; a class in neither labels nor predictions (n/a in the table) is null, not 0.0."""
    import torch
    from fastuda import train
    from fastuda.runtime import loop

    cm = torch.zeros(6, 6, dtype=torch.int64)
    cm[0, 0], cm[0, 1], cm[1, 1], cm[2, 2], cm[3, 3], cm[4, 3] = 3, 1, 1, 2, 1, 1  # class 5 (pole) absent
    # IoU: sky 3/4, road 1/2, building 1, vegetation 1/2, car 0 (a miss, not n/a)
    expected = {"sky": 75.0, "road": 50.0, "building": 100.0, "vegetation": 50.0, "car": 0.0, "pole": None}
    monkeypatch.setattr(loop, "evaluate", lambda *args, **kwargs: cm.clone())
    args = ["demo", "data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=1", "data.eval_samples=1",
            "max_iters=1", "eval_interval=0", "checkpoint_interval=0", "log_interval=1", "--out", str(tmp_path),
            "--no-progress"]  # fmt: skip
    assert train.main(args) == 0
    assert "mIoU 55.00 at iteration 1" in capsys.readouterr().out
    text = (tmp_path / "log.jsonl").read_text()
    record = [json.loads(line) for line in text.splitlines() if "eval" in line][-1]
    assert record["iou"] == pytest.approx(expected) and '"pole": null' in text
    assert record["eval"]["mIoU"] == pytest.approx(55.0)
    assert json.loads((tmp_path / "best.json").read_text()) == {"iteration": 1, "mIoU": pytest.approx(55.0),
                                                                 "unit": "percent"}  # fmt: skip
    if (tmp_path / "tb").exists():  # tensorboard installed
        scalars, _ = tb_scalars(tmp_path / "tb")
        assert scalars["eval/mIoU"] == [(1, pytest.approx(55.0))] and scalars["iou/road"] == [(1, 50.0)]
        assert "iou/pole" not in scalars and scalars["iou/car"] == [(1, 0.0)]
