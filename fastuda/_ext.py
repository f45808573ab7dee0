"""Loads the C++/CUDA extension ``fastuda._C``, which registers its ops with torch.

``pip install`` builds it ahead of time. When that build is missing (a source
checkout on ``PYTHONPATH``, say), the sources in ``csrc/`` are compiled on
first use with ninja through ``torch.utils.cpp_extension.load`` into torch's
extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
That needs a C++ compiler, and nvcc for the CUDA kernels when torch sees a GPU.
"""

import glob
import os

import torch

_loaded = False


def _jit_load() -> None:
    from torch.utils.cpp_extension import load

    csrc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True))
    if not sources:
        raise ImportError(
            "fastuda._C is not built and the csrc/ sources are not here to build it; "
            "reinstall with `pip install --no-build-isolation -e .`"
        )
    if torch.cuda.is_available():
        sources += sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))
    load(name="fastuda_C", sources=sources, extra_cflags=["-O3"], is_python_module=False, verbose=False)


def load_extension() -> None:
    """Makes sure the ``fastuda::`` ops of the extension are registered."""
    global _loaded
    if _loaded:
        return
    try:
        from fastuda import _C  # noqa: F401
    except ImportError:
        _jit_load()
    _loaded = True
