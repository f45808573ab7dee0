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
import importlib
import os
from collections.abc import Callable

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


# Every Triton-backed op body is the same branch: the Triton launcher when ``use_triton`` says so,
# under the device guard, else the reference. It lives here once, as two plain functions the op
# body calls, rather than as one ``torch.library.register_kernel`` per device: the choice is not
# a function of the device alone (``set_backend("reference")`` keeps CUDA tensors on the
# reference, ``"triton"`` sends CPU tensors to the interpreter), so a per-device kernel would
# still test the backend inside, twice per op (CPU and CUDA) instead of once. And an op body
# that branches in Python is what OPS-NOTES.md calls the safe pattern under torch.compile: the
# body is opaque to the compiler, which runs the fake.


def launch(launcher: str, device: torch.device, *args):
    """Runs the Triton launcher ``"module.function"`` of ``fastuda.kernels`` on ``device``'s
    tensors. The import happens here, at the first launch, because Triton is optional (no Triton
    off Linux) and importing it reads ``TRITON_INTERPRET``; the launcher is looked up on every call,
    a dict lookup next to a kernel launch, so a test can replace it on the module."""
    module, name = launcher.split(".")
    kernel = getattr(importlib.import_module(f"fastuda.kernels.{module}"), name)
    with device_guard(device):
        return kernel(*args)


def dispatch(device: torch.device, launcher: str, reference_fn: Callable, *args):
    """``launch(launcher, device, *args)`` when ``device``'s tensors take the Triton kernel (see
    ``use_triton``), else ``reference_fn(*args)``: for ops whose launcher and reference take the
    same arguments and return the same layout."""
    if use_triton(device):
        return launch(launcher, device, *args)
    return reference_fn(*args)
