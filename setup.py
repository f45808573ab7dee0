"""Build and install fastuda.

The Python package is ``fastuda/``, the only top-level import name. The Triton
kernels live in ``kernels/``, a plain folder (no ``__init__.py``: ``kernels`` is
taken on PyPI, and the repo root is on ``sys.path`` while this file runs);
``fastuda/kernels`` is a symbolic link to it, so they are the namespace
subpackage ``fastuda.kernels``, which the wheel holds as plain files. The
C++/CUDA sources in ``csrc/`` become the extension ``fastuda._C``.

When torch has CUDA and a CUDA toolkit (nvcc) is found, ``fastuda._C`` gets the
CUDA kernels too, compiled for the visible GPU or, without one, for sm_80 and
sm_90, and linked against the CUDA runtime that the installed torch loaded
(pip's torch brings it in the ``nvidia-cuda-runtime`` wheel, not in CUDA_HOME).
When that build fails (no nvcc, a toolkit whose major version differs from
torch's, a compiler it rejects), the build warns in one line and falls back to
the CPU-only extension; ``fastuda`` then refuses to import on a GPU machine
with a message that says how to rebuild.

Build switches (environment variables):

* ``FASTUDA_SKIP_CUDA_BUILD=1``: build the CPU-only extension even when torch
  has CUDA and a CUDA toolkit is found.
* ``TORCH_CUDA_ARCH_LIST``: the usual torch variable; when it is unset and no
  GPU is visible, the CUDA build targets sm_80 and sm_90.
* ``MAX_JOBS``: parallel compile jobs for ninja.

Build with ``pip install --no-build-isolation -e .``: the extension compiles
against the torch that is already installed, so build isolation must be off.
"""

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CXX_FLAGS = ["-O3"]  # torch adds the -std its headers need (C++17 or C++20)


def _want_cuda() -> bool:
    if os.environ.get("FASTUDA_SKIP_CUDA_BUILD", "0") not in ("", "0"):
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def _torch_cudart() -> str | None:
    """The libcudart.so.N that ``import torch`` loaded: ``fastuda._ext.torch_cudart``, run from
    this tree's file (importing ``fastuda`` here could pick up another installed copy)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fastuda_ext", os.path.join(ROOT, "fastuda", "_ext.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.torch_cudart()


def _source_files(pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join("csrc", "**", pattern), recursive=True))


def _cpu_extension():
    from torch.utils.cpp_extension import CppExtension

    return CppExtension("fastuda._C", _source_files("*.cpp"), extra_compile_args={"cxx": list(CXX_FLAGS)})


def _cuda_extension():
    import torch
    from torch.utils.cpp_extension import CUDAExtension

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    ext = CUDAExtension(
        "fastuda._C",
        _source_files("*.cpp") + _source_files("*.cu"),
        define_macros=[("FASTUDA_WITH_CUDA", None)],
        extra_compile_args={"cxx": list(CXX_FLAGS), "nvcc": ["-O3"]},
    )
    cudart = _torch_cudart()
    if cudart is not None:
        # -l:FILE links the versioned file itself (the wheel ships no libcudart.so
        # symlink). No rpath: torch is imported before fastuda._C and has loaded
        # this soname already, so the loader reuses torch's runtime.
        ext.libraries.remove("cudart")
        ext.extra_link_args += [f"-L{os.path.dirname(cudart)}", f"-l:{os.path.basename(cudart)}"]
    return ext


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtensionWithFallback(BuildExtension):
        """Builds the CUDA extension; when that fails, warns in one line and builds the CPU-only one."""

        def build_extensions(self) -> None:
            try:
                super().build_extensions()
            except Exception as error:  # CompileError, LinkError, torch's toolkit checks (RuntimeError, OSError)
                cuda = [ext for ext in self.extensions if any(s.endswith(".cu") for s in ext.sources)]
                if not cuda:
                    raise
                reason = " ".join(str(error).split())[:300]
                print(f"WARNING: fastuda: the CUDA build of fastuda._C failed ({type(error).__name__}: {reason}); "
                      "building the CPU-only extension instead", file=sys.stderr, flush=True)  # fmt: skip
                cpu = _cpu_extension()
                for ext in cuda:  # in place: setuptools keeps its bookkeeping on these objects
                    for field in ("sources", "define_macros", "extra_compile_args", "extra_link_args",
                                  "libraries", "library_dirs", "include_dirs"):  # fmt: skip
                        setattr(ext, field, getattr(cpu, field))
                super().build_extensions()

    return BuildExtensionWithFallback.with_options(use_ninja=True)


setup(
    name="fastuda",
    version="0.1.0",
    description="Fast domain-adaptive semantic segmentation (DAFormer / HRDA / MIC) built on fused kernels",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # fastuda.kernels: the folder kernels/ through the link fastuda/kernels, without __init__.py
    packages=[*find_packages(include=["fastuda", "fastuda.*"]), "fastuda.kernels"],
    ext_modules=[_cuda_extension() if _want_cuda() else _cpu_extension()],
    cmdclass={"build_ext": _build_ext()},
    install_requires=[
        # lower bounds: the oldest tested set, constraints-oldest.txt (tests/test_versions.py)
        "torch>=2.11.0",
        "triton>=3.6.0; platform_system == 'Linux'",
        "timm>=1.0.20",
        "numpy>=2.0.2",
        "pillow",
        "tqdm",
        "tensorboard",
    ],
    extras_require={
        "dev": ["pytest", "pytest-benchmark", "ninja", "transformers>=5.17.0", "build"],
        "hf": ["transformers>=5.17.0"],
    },
)
