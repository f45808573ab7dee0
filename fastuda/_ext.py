"""Loads the C++/CUDA extension ``fastuda._C``, which registers its ops with torch.

``pip install`` builds it ahead of time. When that build is missing (a source
checkout on ``PYTHONPATH``, say), the sources in ``csrc/`` are compiled on
first use with ninja through ``torch.utils.cpp_extension.load`` into torch's
extension cache (``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
That needs a C++ compiler, and nvcc for the CUDA kernels when torch sees a GPU.

A ``fastuda._C`` built without CUDA kernels (``FASTUDA_SKIP_CUDA_BUILD=1``, or
no nvcc at build time) is refused on a machine where torch sees a GPU, with
the command that rebuilds it: otherwise the first ClassMix of a training run
would fail deep inside the step.
"""

import glob
import os

import torch

_loaded = False
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_cudart() -> str | None:
    """The ``libcudart.so.N`` that torch loaded into this process (Linux), else None.

    Extensions must link this runtime: pip's torch takes it from the
    ``nvidia-cuda-runtime`` wheel, not from CUDA_HOME, which may not hold one.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libcudart.so") and os.path.isfile(path):
                    return path
    except OSError:  # not Linux
        pass
    return None


def has_cuda_kernels() -> bool:
    """Whether the loaded extension registered CUDA kernels for its ops."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastuda::class_presence", "CUDA")


def _rebuild_command() -> str:
    if os.path.isfile(os.path.join(_ROOT, "setup.py")):  # a source tree (editable install or checkout)
        return f"cd {_ROOT} && pip install --no-build-isolation --no-deps -e ."
    return "pip install --no-build-isolation --no-deps --force-reinstall <fastuda source directory>"


def _jit_load() -> None:
    from torch.utils.cpp_extension import _get_build_directory, load

    csrc = os.path.join(_ROOT, "csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "**", "*.cpp"), recursive=True))
    if not sources:
        raise ImportError(
            "fastuda._C is not built and the csrc/ sources are not here to build it; "
            "reinstall with `pip install --no-build-isolation -e .`"
        )
    flags, ldflags = ["-O3"], []
    if torch.cuda.is_available():
        sources += sorted(glob.glob(os.path.join(csrc, "**", "*.cu"), recursive=True))
        flags.append("-DFASTUDA_WITH_CUDA")
        cudart = torch_cudart()
        if cudart is not None:
            # torch's load() links -lcudart; pip's runtime ships only libcudart.so.N,
            # so give the linker an unversioned name for it in the build directory.
            link_dir = os.path.join(_get_build_directory("fastuda_C", False), "cudart")
            os.makedirs(link_dir, exist_ok=True)
            link = os.path.join(link_dir, "libcudart.so")
            if os.path.realpath(link) != os.path.realpath(cudart):
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(cudart, link)
            ldflags.append(f"-L{link_dir}")
    load(name="fastuda_C", sources=sources, extra_cflags=flags, extra_cuda_cflags=flags, extra_ldflags=ldflags,
         is_python_module=False, verbose=False)  # fmt: skip


def load_extension() -> None:
    """Makes sure the ``fastuda::`` ops of the extension are registered (with CUDA kernels on a GPU machine)."""
    global _loaded
    if _loaded:
        return
    try:
        from fastuda import _C
    except ImportError:
        _C = None
        _jit_load()
    if torch.cuda.is_available() and not has_cuda_kernels():
        where = _C.__file__ if _C is not None else "the JIT build"
        raise ImportError(
            f"fastuda._C ({where}) has no CUDA kernels but torch sees a GPU: it was built without CUDA "
            "(FASTUDA_SKIP_CUDA_BUILD=1, or no nvcc when it was built). Rebuild it with a CUDA toolkit "
            f"on PATH and FASTUDA_SKIP_CUDA_BUILD unset: `{_rebuild_command()}`"
        )
    _loaded = True
