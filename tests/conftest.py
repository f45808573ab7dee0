"""Test tiers (DESIGN.md):

1. CPU, always.
2. Interpreter (marker ``interpreter``): Triton kernels on CPU through
   TRITON_INTERPRET=1, which this file sets when no GPU is present (it must be
   set before any Triton kernel module is imported).
3. CUDA (marker ``cuda``): skipped without a GPU, and under the interpreter.

Slow checks carry the marker ``slow`` and are deselected by default; run them
with ``pytest -m slow tests`` (or ``make test PYTEST_ARGS='-m "slow or not slow"'``).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fastuda.ops  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU (and TRITON_INTERPRET unset)")
    skip_interp = pytest.mark.skip(reason="needs TRITON_INTERPRET=1 (set automatically without a GPU)")
    for item in items:
        if "cuda" in item.keywords and (not HAS_CUDA or INTERPRET):
            item.add_marker(skip_cuda)
        if "interpreter" in item.keywords and not INTERPRET:
            item.add_marker(skip_interp)


@pytest.fixture(autouse=True)
def _restore_op_state():
    """Each test starts on the default backend and value-check mode, and leaves them so."""
    previous = fastuda.ops.get_value_checks()
    fastuda.ops.set_backend("auto")
    yield
    fastuda.ops.set_backend("auto")
    fastuda.ops.set_value_checks(previous)


@pytest.fixture(autouse=True)
def _zeroed_kernel_workspaces():
    """Each test starts with the kernels' counter workspaces zeroed (kernels/_pixels.py). A kernel
    that raises midway under the interpreter leaves its counters behind, and the next launch that
    shares them would take the wrong roles (pseudo_label's writers would wait for ever): one
    failing test must not hang the ones after it."""
    from fastuda.kernels._pixels import reset_workspaces

    reset_workspaces()
    yield


@pytest.fixture
def triton_cpu():
    """Runs fastuda ops through the Triton interpreter on CPU tensors."""
    with fastuda.ops.use_backend("triton"):
        yield
