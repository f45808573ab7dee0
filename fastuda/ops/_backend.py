"""Which implementation an op runs: the one documented switch.

* ``"auto"`` (default): CUDA tensors run the fused kernels (Triton, or the C++/
  CUDA extension), CPU tensors the pure-PyTorch reference (Triton ops) or the
  C++ CPU kernel (extension ops).
* ``"reference"``: the pure-PyTorch reference on every device (debugging,
  benchmark baselines).
* ``"triton"``: the Triton kernels on every device. CPU tensors need Triton's
  interpreter: ``TRITON_INTERPRET=1`` must be set before fastuda is imported.

Set it with ``fastuda.ops.set_backend(name)``, the context manager
``fastuda.ops.use_backend(name)``, or the environment variable
``FASTUDA_BACKEND`` (read at import).
"""

import contextlib
import os

import torch

BACKENDS = ("auto", "reference", "triton")


def _parse(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_backend = _parse(os.environ.get("FASTUDA_BACKEND", "auto"))


def set_backend(name: str) -> None:
    """Selects the implementation every fastuda op runs (see module docs)."""
    global _backend
    _backend = _parse(name)


def get_backend() -> str:
    return _backend


@contextlib.contextmanager
def use_backend(name: str):
    """Runs the block with another backend, then restores the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(device: torch.device) -> bool:
    """True when an op on ``device`` should run its Triton kernel."""
    if _backend == "reference":
        return False
    if _backend == "auto":
        return device.type == "cuda"
    if device.type != "cuda" and not interpreter_enabled():
        raise RuntimeError(
            f"fastuda backend 'triton' got {device.type} tensors: Triton runs on CPU only through its "
            "interpreter; set TRITON_INTERPRET=1 before importing fastuda, or use backend 'auto'"
        )
    return True


def device_guard(device: torch.device):
    """Context for a Triton launch on ``device``'s tensors: Triton launches on the CURRENT CUDA
    device, not on its arguments' device, so without this a ``cuda:1`` tensor would run on GPU 0
    with pointers into GPU 1. A no-op off CUDA (the interpreter)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
