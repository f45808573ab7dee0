"""Build and install fastuda.

The Python package is ``fastuda/``; the Triton kernels in ``kernels/`` are
installed as ``fastuda.kernels`` (``kernels`` alone is taken on PyPI); the
C++/CUDA sources in ``csrc/`` become the extension ``fastuda._C``.

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

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    if os.environ.get("FASTUDA_SKIP_CUDA_BUILD", "0") not in ("", "0"):
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def _extensions():
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    cpp = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cu = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    cxx = ["-O3"]  # torch adds the -std its headers need (C++17 or C++20)
    if _want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        return [
            CUDAExtension(
                "fastuda._C",
                cpp + cu,
                define_macros=[("FASTUDA_WITH_CUDA", None)],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            )
        ]
    return [CppExtension("fastuda._C", cpp, extra_compile_args={"cxx": cxx})]


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    name="fastuda",
    version="0.1.0",
    description="Fast domain-adaptive semantic segmentation (DAFormer / HRDA / MIC) built on fused kernels",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["fastuda", "fastuda.ops", "fastuda.kernels", "fastuda.data"],
    package_dir={"fastuda": "fastuda", "fastuda.kernels": "kernels"},
    ext_modules=_extensions(),
    cmdclass={"build_ext": _build_ext()},
    install_requires=[
        "torch>=2.11",
        "triton>=3.6; platform_system == 'Linux'",
        "timm",
        "numpy",
    ],
    extras_require={"dev": ["pytest", "pytest-benchmark", "ninja"]},
)
