"""A run's checkpoints: the ``Checkpointer`` (save, retention, best, restore), the random state
of a run, and what may change when a run is resumed.

A write goes to ``.NAME.tmpPID`` in the same folder, is fsync'ed, renamed over ``NAME``
and the folder entry is fsync'ed: a SIGKILL or power cut at any moment leaves the previous
``latest.pt`` or the new one, never a torn file. A fresh run writes ``latest.pt`` at
iteration 0 before training (it also proves the folder writable), so there is always one to
resume from. Temporary files of killed writes are removed when a run starts.
"""

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from fastuda._io import atomic_write, write_text
from fastuda.config import TrainConfig, from_dict, set_value, to_dict
from fastuda.models.checkpoint import read_training_checkpoint
from fastuda.runtime import distributed
from fastuda.models.checkpoint_format import FORMAT
from fastuda.models.daformer_head import FUSE_KEY, fuse_levels, reverse_fuse_blocks

# Fields a resumed run may change: where data and outputs live, how long it runs, how
# often it logs / evaluates / saves, how many workers decode, how evaluation is sampled.
# Anything else would change the function being trained.
RESUMABLE = ("data.source_root", "data.target_root", "data.workers", "data.eval_split", "data.eval_samples",
             "max_iters", "eval_interval", "checkpoint_interval", "log_interval", "out", "checkpoint.keep_last",
             "model.pretrained")  # fmt: skip


def seed_all(seed: int) -> None:
    """torch (CPU and CUDA), Python and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state(generator: torch.Generator) -> dict:
    """Every random stream of the loop: torch (CPU and CUDA), Python, NumPy and the step's generator."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
             "generator": generator.get_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(generator.device) if generator.device.type == "cuda" else None
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    generator.set_state(state["generator"])
    cuda = state.get("cuda")
    if isinstance(cuda, list) and torch.cuda.is_available():  # written before per-rank states
        torch.cuda.set_rng_state_all(cuda)
    elif cuda is not None and generator.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, generator.device)


def training_state(nets: dict, optimizer, scheduler, rngs: list, iteration: int, draws: int, world: int,
                   cfg: TrainConfig, disc_optim=None) -> dict:  # fmt: skip
    """What ``latest.pt`` holds: ``nets`` ({"student", "teacher", "imnet", "discriminator"}, None
    where absent), the optimiser and schedule (AdvSeg: the discriminator's too, ``disc_optim`` =
    (optimizer, scheduler)), every rank's RNG states, the iteration, the global draws consumed
    (the data order continues there, whatever the next world size), the config, and the
    checkpoint ``format`` (``fastuda.models.checkpoint_format.FORMAT``)."""
    state = {**{k: m.state_dict() if m is not None else None for k, m in nets.items()},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs,
             "iteration": iteration, "draws": draws, "world": world, "config": to_dict(cfg),
             "format": FORMAT}  # fmt: skip
    if disc_optim is not None:
        state["disc_optimizer"], state["disc_scheduler"] = (x.state_dict() for x in disc_optim)
    return state


def restore(state: dict, nets: dict, optimizer, scheduler, generator: torch.Generator, rank: int,
            disc_optim=None) -> tuple[int, int]:  # fmt: skip
    """Loads ``state`` into the run; returns (iteration, draws consumed). Rank r takes the
    RNG states rank r saved; a rank the saved run did not have keeps its fresh streams."""
    for k, m in nets.items():
        if m is not None:
            m.load_state_dict(state[k])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("fuse_reversed"):  # an old-order SegFormer head (upgrade_fastuda): its moments follow
        fuse = dict(nets["student"].named_parameters())[FUSE_KEY]
        moments = optimizer.state.get(fuse, {})
        for name, value in moments.items():
            if torch.is_tensor(value) and value.shape == fuse.shape:
                moments[name] = reverse_fuse_blocks(value, fuse_levels(state["student"]))
    scheduler.load_state_dict(state["scheduler"])
    if disc_optim is not None:
        disc_optim[0].load_state_dict(state["disc_optimizer"])
        disc_optim[1].load_state_dict(state["disc_scheduler"])
    rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    if rank < len(rngs):
        set_rng_state(rngs[rank], generator)
    cfg = state["config"]
    return state["iteration"], state.get("draws", state["iteration"] * cfg["data"]["batch_size"])


class Checkpointer:
    """A run's checkpoints, in ``out``: ``latest.pt`` (durable and atomic, every save),
    ``iter_N.pt`` at multiples of ``checkpoint_interval`` (a hard link to the same bytes; the newest
    ``checkpoint.keep_last`` kept), ``best.pt`` + ``best.json`` (the best evaluation so far, mIoU
    in percent), and the resume: what ``restore`` loads and where the data order continues.

    The loop calls ``restore`` (a resumed run), ``start`` (before training), ``save`` and
    ``update_best``; every rank calls ``save`` (it gathers the ranks' RNG states and rank 0's BN
    statistics), rank 0 alone writes.
    """

    def __init__(self, out: Path, cfg: TrainConfig, dist, nets: dict, optimizer, scheduler,
                 generator: torch.Generator, disc_optim=None):  # fmt: skip
        self.out, self.cfg, self.dist = Path(out), cfg, dist
        self.nets, self.optimizer, self.scheduler, self.disc_optim = nets, optimizer, scheduler, disc_optim
        self.generator = generator
        self.start, self.draws = 0, 0  # the iteration this process started at, the draws consumed before it
        self.resumed = False
        self.best_score, self.best_iteration = -1.0, None

    @property
    def latest(self) -> Path:
        return self.out / "latest.pt"

    def restore(self, state: dict) -> int:
        """Loads a saved run (``load_training_checkpoint``) into the networks, optimisers and this
        rank's RNG streams; returns the iteration it continues from."""
        self.start, self.draws = restore(state, self.nets, self.optimizer, self.scheduler, self.generator,
                                         self.dist.rank, self.disc_optim)  # fmt: skip
        self.resumed = True
        return self.start

    def begin(self) -> None:
        """Before training (rank 0): removes the temporaries of killed writes, and reads the best
        evaluation of a resumed run, of the iterations it has not undone."""
        if not self.dist.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.out)
        path = self.out / "best.json"
        if self.resumed and path.is_file():
            data = json.loads(path.read_text())
            if data["iteration"] <= self.start:  # runs before fastuda 0.1's percent units stored fractions
                scale = 1 if data.get("unit") == "percent" else 100
                self.best_score, self.best_iteration = scale * data["mIoU"], data["iteration"]

    def save(self, iteration: int) -> None:
        """``latest.pt`` at ``iteration`` (all ranks call it); ``iter_N.pt`` at the interval."""
        d = self.dist
        rngs = distributed.gather(rng_state(self.generator), d)
        distributed.broadcast_state([self.nets["student"], self.nets.get("teacher")], d, params=False)
        if not d.main:
            return
        consumed = self.draws + (iteration - self.start) * d.world * self.cfg.data.batch_size
        state = training_state(self.nets, self.optimizer, self.scheduler, rngs, iteration, consumed, d.world,
                               self.cfg, self.disc_optim)  # fmt: skip
        _save(self.latest, state)
        interval = self.cfg.checkpoint_interval
        if iteration and interval and iteration % interval == 0:
            _link_or_copy(self.latest, self.out / f"iter_{iteration}.pt")
            _prune(self.out, self.cfg.checkpoint.keep_last)

    def update_best(self, iteration: int, score: float | None) -> bool:
        """Rank 0: keeps ``latest.pt`` (saved at ``iteration``) as ``best.pt`` if ``score`` (mIoU,
        percent) beats the best so far; True when it did."""
        if not self.dist.main or score is None or score <= self.best_score:
            return False
        _link_or_copy(self.latest, self.out / "best.pt")
        self.best_score, self.best_iteration = score, iteration
        write_text(self.out / "best.json", json.dumps({"iteration": iteration, "mIoU": score, "unit": "percent"}),
                   durable=True)
        return True


def remove_temporaries(out: Path) -> list[Path]:
    """Deletes the ``.NAME.tmpPID`` files (``fastuda._io.temporary_name``) left by killed writes
    in ``out``; returns them."""
    stale = [p for p in Path(out).glob(".*.tmp*") if re.fullmatch(r"\..+\.tmp\d+", p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _save(path: Path, state: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.save then writes it in one stream
            torch.save(state, f)

    atomic_write(path, write, durable=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the current content of ``src`` (a hard link when the filesystem allows), atomically."""

    def write(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    atomic_write(dst, write, durable=True)


def _prune(out: Path, keep_last: int | None) -> None:
    """Keeps the newest ``keep_last`` ``iter_N.pt`` files (None: all)."""
    if not keep_last:
        return
    numbered = [(int(m[1]), p) for p in Path(out).glob("iter_*.pt") if (m := re.fullmatch(r"iter_(\d+)\.pt", p.name))]
    for _, p in sorted(numbered)[:-keep_last]:
        p.unlink(missing_ok=True)


def load_training_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint written by ``fastuda.train`` (student, teacher, optimiser, RNG, config);
    ``mmap`` reads tensors lazily (cheap when only the config is needed)."""
    del mmap  # read_training_checkpoint reads weights-only, and refuses any other kind of file
    return read_training_checkpoint(path)


def _flat(cfg) -> dict:
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = tuple(v) if isinstance(v, list) else v

    walk(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, "")
    return out


def resume_config(saved: dict, requested: TrainConfig | None, where: str = "the checkpoint") -> TrainConfig:
    """The config of a resumed run: the checkpoint's, with the ``RESUMABLE`` fields of
    ``requested`` (the command line's); any other difference is an error naming the key."""
    cfg = from_dict(saved)
    if requested is None:
        return cfg
    old, new = _flat(cfg), _flat(requested)
    changed = [k for k in new if k in old and old[k] != new[k]]
    fixed = [k for k in changed if k not in RESUMABLE]
    if fixed:
        k = fixed[0]
        more = f" (and {', '.join(fixed[1:])})" if len(fixed) > 1 else ""
        raise ValueError(f"{k}={new[k]!r} differs from {old[k]!r} in {where}{more}: a resumed run may change "
                         "only paths, lengths, intervals and workers (fastuda.runtime.checkpoint.RESUMABLE); "
                         "start a new run with another --out to change it")  # fmt: skip
    for k in changed:
        set_value(cfg, k, new[k])
    return cfg


def resume_path(out: Path, explicit: str | Path | None = None, insist: bool = False,
                requested: TrainConfig | None = None) -> Path | None:  # fmt: skip
    """The checkpoint a run continues: ``explicit``, else ``OUT/latest.pt`` when it exists (an
    error with ``insist``); with ``requested``, its overrides are checked against the run's config."""
    path = Path(explicit) if explicit else Path(out) / "latest.pt"
    if not path.is_file():
        if explicit or insist:
            raise ValueError(f"--resume: {path} not found")
        return None
    if requested is not None:
        resume_config(load_training_checkpoint(path, mmap=True)["config"], requested, str(path))
    return path
