"""Resume a user can trust: the command line, what overrides may change, retention, the
log, and what SIGKILL (during a checkpoint write) and SIGTERM leave behind."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fastuda import train
from fastuda.runtime.checkpoint import load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
T = ["data.synthetic_size=32", "data.synthetic_samples=4", "data.batch_size=2", "log_interval=1", "eval_interval=-1",
     "checkpoint_interval=0"]  # fmt: skip


def iters(out: Path, key: str = "loss") -> list[int]:
    return [r["iter"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if key in r]


def test_cli_any_order_resume_flag_and_override_whitelist(tmp_path, capsys):
    out = str(tmp_path)
    assert train.main(["--out", out, "--no-progress", "demo", *T[:3], "--stop-at", "1", *T[3:], "max_iters=2"]) == 0
    assert load_training_checkpoint(tmp_path / "latest.pt")["iteration"] == 1
    # --resume takes no value: max_iters=3 is an override, and extending a run is allowed
    assert train.main(["demo", "--resume", "max_iters=3", *T, "--out", out, "--no-progress"]) == 0
    state = load_training_checkpoint(tmp_path / "latest.pt")
    assert state["iteration"] == 3 and state["config"]["max_iters"] == 3
    assert iters(tmp_path) == [1, 2, 3]
    # changes the function: a one-line error naming the key, exit 2
    assert train.main(["demo", *T, "max_iters=3", "optim.lr=0.1", "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr=0.1 differs from 0.0006" in err and "--out" in err
    with pytest.raises(SystemExit):
        train.main(["demo", "--resume", str(tmp_path / "latest.pt"), "--out", out])
    assert "--resume-from" in capsys.readouterr().err
    assert train.main(["demo", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


def test_keep_last_best_fresh_log_and_temporaries(tmp_path):
    from test_train import tiny

    (tmp_path / "log.jsonl").write_text('{"iter": 7, "loss": 1.0}\n')  # an old run's log, no checkpoint
    (tmp_path / ".latest.pt.tmp4242").write_bytes(b"torn")  # a write killed earlier
    cfg = tiny("demo", "max_iters=4", "checkpoint_interval=1", "checkpoint.keep_last=2", "eval_interval=2")
    train.train(cfg, tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in names if n.startswith("iter_")] == ["iter_3.pt", "iter_4.pt"]
    assert not [n for n in names if ".tmp" in n]
    assert iters(tmp_path) == [1, 2, 3, 4]
    evals = {r["iter"]: r["eval"]["mIoU"] for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
             if "eval" in r}  # fmt: skip
    best = json.loads((tmp_path / "best.json").read_text())
    assert set(evals) == {2, 4} and best["mIoU"] == max(evals.values())
    assert load_training_checkpoint(tmp_path / "best.pt")["iteration"] == best["iteration"]


_KILL_IN_SECOND_WRITE = """
import io, os, signal, sys, torch
real, calls = torch.save, []
def save(obj, f, *args, **kwargs):  # the second checkpoint (iteration 2): half written, then SIGKILL
    calls.append(1)
    if len(calls) == 2:
        buf = io.BytesIO(); real(obj, buf); f.write(buf.getvalue()[: buf.tell() // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = save
from fastuda import train
sys.exit(train.main(sys.argv[1:]))
"""


def test_sigkill_during_checkpoint_write_then_auto_resume(tmp_path):
    args = ["demo", *T, "max_iters=4", "checkpoint_interval=2", "--out", str(tmp_path), "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_SECOND_WRITE, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in tmp_path.glob(".latest.pt.tmp*")]  # the torn write
    assert load_training_checkpoint(tmp_path / "latest.pt")["iteration"] == 0  # written before training
    assert iters(tmp_path) == [1, 2]
    assert train.main(args) == 0  # the same command again: resumes by itself
    assert load_training_checkpoint(tmp_path / "latest.pt")["iteration"] == 4
    assert not list(tmp_path.glob(".*.tmp*"))
    assert iters(tmp_path) == [1, 2, 3, 4]  # iterations 1 and 2 were redone, and logged once


def test_sigterm_checkpoints_and_exits_zero(tmp_path, monkeypatch, capsys):
    import fastuda.runtime.loop as loop
    import fastuda.train as t

    step = loop.uda_step

    def step_then_sigterm(state, batch, cfg, iteration):
        if iteration == 2:  # a real signal, in the middle of iteration 3
            os.kill(os.getpid(), signal.SIGTERM)
        return step(state, batch, cfg, iteration)

    monkeypatch.setattr(loop, "uda_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    assert t.main(["demo", *T, "max_iters=100", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "SIGTERM: stopped at iteration 3; run the same command to continue" in capsys.readouterr().err
    assert load_training_checkpoint(tmp_path / "latest.pt")["iteration"] == 3 and iters(tmp_path) == [1, 2, 3]
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are restored


def test_finished_run_says_so_and_does_not_evaluate_again(tmp_path, capsys):
    """Issue 20 #2: the same command after the end neither trains nor logs a second final evaluation."""
    args = ["demo", *T, "max_iters=2", "eval_interval=0", "data.eval_samples=2", "--out", str(tmp_path),
            "--no-progress"]  # fmt: skip
    assert train.main(args) == 0
    capsys.readouterr()
    assert train.main(args) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path} is already at iteration 2 ({tmp_path / 'latest.pt'}): finished (max_iters=2)" in err
    assert iters(tmp_path, "eval") == [2]
    if (tmp_path / "tb").exists():  # tensorboard installed
        from test_logging import tb_scalars

        scalars, _ = tb_scalars(tmp_path / "tb")
        assert [s for s, _ in scalars["eval/mIoU"]] == [2] and [s for s, _ in scalars["iou/sky"]] == [2]


def test_resume_and_stop_at_say_where(tmp_path, capsys):
    """Issue 20 #3: --stop-at says where it stopped (its bar is not full); the rerun says where it resumes."""
    args = ["demo", *T, "max_iters=4", "--out", str(tmp_path)]
    assert train.main([*args, "--stop-at", "2"]) == 0
    err = capsys.readouterr().err
    assert f"--stop-at 2: stopped at iteration 2 of 4; run the command without --stop-at to continue from " \
           f"{tmp_path / 'latest.pt'}" in err  # fmt: skip
    assert " 2/4 " in err and "4/4" not in err and "resuming" not in err
    assert train.main([*args, "--no-progress"]) == 0
    assert f"resuming from iteration 2 ({tmp_path / 'latest.pt'})" in capsys.readouterr().err
