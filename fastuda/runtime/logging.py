"""The run's log: one JSON record per line in ``log.jsonl``, and TensorBoard scalars when installed."""

import json
from pathlib import Path


class RunLogger:
    """JSONL always; TensorBoard when installed."""

    def __init__(self, out: Path, enabled: bool = True):
        self.file = open(Path(out) / "log.jsonl", "a", encoding="utf-8") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out) / "tb"))
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
