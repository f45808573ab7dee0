"""Checkpoint I/O: atomic writes and the random state of a run."""

import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_state(generator: torch.Generator) -> dict:
    """Every random stream of the loop: torch (CPU and CUDA), Python, NumPy and the step's generator."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
             "generator": generator.get_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file in the same directory, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_training_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``fastuda.train`` (student, teacher, optimiser, RNG, config)."""
    return torch.load(path, map_location="cpu", weights_only=False)
