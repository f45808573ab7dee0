"""The run's log: one JSON record per line in ``log.jsonl``, and TensorBoard scalars when installed."""

import json
import os
from pathlib import Path


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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


class RunLogger:
    """JSONL always; TensorBoard when installed. A fresh run (``resume_at=None``) starts an
    empty log; a run resumed at iteration s keeps what was logged up to s and nothing after."""

    def __init__(self, out: Path, enabled: bool = True, resume_at: int | None = None):
        self.file = self.tb = None
        if not enabled:
            return
        path = Path(out) / "log.jsonl"
        if resume_at is not None:
            _cut_log(path, resume_at)
        self.file = open(path, "a" if resume_at is not None else "w", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard drops older events from that step on (a fresh run: all of them)
            purge = 0 if resume_at is None else resume_at + 1
            self.tb = SummaryWriter(str(Path(out) / "tb"), purge_step=purge)
        except Exception:  # tensorboard not installed
            self.tb = None

    def log(self, iteration: int, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps({"iter": iteration, **record}) + "\n")
            self.file.flush()
        if self.tb:
            for k, v in record.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, iteration)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()
