"""The CUDA sources compile with nvcc, also on machines without a GPU (compile only, no link).

Skips cleanly when no nvcc is found; a compile error in csrc/ fails.
"""

import os
import pathlib
import shutil
import subprocess

import pytest
import torch.utils.cpp_extension as cpp

ROOT = pathlib.Path(__file__).resolve().parents[1]
CU_FILES = sorted((ROOT / "csrc").rglob("*.cu"))


def find_nvcc():
    if cpp.CUDA_HOME and os.path.exists(os.path.join(cpp.CUDA_HOME, "bin", "nvcc")):
        return os.path.join(cpp.CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    includes = [f"-I{p}" for p in cpp.include_paths()]
    cmd = [nvcc, "-c", str(source), "-o", str(tmp_path / "out.o"), "-std=c++20", "-O1", "-arch=sm_90",
           "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", *includes]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]


def _jit_python(code: str, tmp_path, **env) -> str:
    """The last line ``code`` prints in a fresh interpreter whose JIT builds go to ``tmp_path``."""
    import sys

    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), **env)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout.strip().splitlines()[-1]


def test_jit_fallback_builds_the_extension(tmp_path):
    """Without the prebuilt fastuda._C, fastuda compiles csrc/ with ninja on first use."""
    code = (
        "import torch; from fastuda._ext import _jit_load; _jit_load();"
        "label = torch.tensor([[[0, 2], [255, 2]]]);"
        "print(torch.ops.fastuda.class_presence(label, 3, 255).tolist())"
    )
    assert _jit_python(code, tmp_path, CUDA_VISIBLE_DEVICES="") == "[[True, False, True, True]]"


@pytest.mark.slow
def test_pip_install_links_the_cuda_runtime_torch_loaded(tmp_path):
    """Plain `pip install .` with nvcc and no GPU (no FASTUDA_SKIP_CUDA_BUILD): the CUDA
    extension builds, links the libcudart that torch loaded and registers CUDA kernels."""
    import sys

    import torch

    from fastuda._ext import torch_cudart
    from test_package import check_installed_copy, copy_source_tree

    if find_nvcc() is None or torch.version.cuda is None:
        pytest.skip("needs nvcc and a CUDA build of torch")
    cudart = torch_cudart()
    src = copy_source_tree(tmp_path / "src")
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k not in ("FASTUDA_SKIP_CUDA_BUILD", "TORCH_CUDA_ARCH_LIST")}
    env["TORCH_CUDA_ARCH_LIST"] = "9.0"  # one architecture keeps the test to one nvcc pass
    cmd = [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation", "--target", str(site), "."]
    result = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "WARNING: fastuda:" not in out, out[-5000:]
    (so,) = (site / "fastuda").glob("_C*.so")
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    if cudart is not None:
        assert f"[{os.path.basename(cudart)}]" in needed, needed
    assert check_installed_copy(site, tmp_path) == "True"


@pytest.mark.slow
def test_jit_build_on_a_gpu_machine_compiles_and_links_the_cuda_kernels(tmp_path):
    """The JIT fallback when torch sees a GPU (faked: the kernels are compiled, not run):
    csrc/*.cu is compiled too and linked against torch's libcudart."""
    import torch

    if find_nvcc() is None or torch.version.cuda is None:
        pytest.skip("needs nvcc and a CUDA build of torch")
    code = (
        "import torch; torch.cuda.is_available = lambda: True;"
        "from fastuda._ext import _jit_load, has_cuda_kernels; _jit_load();"
        "print(has_cuda_kernels())"
    )
    assert _jit_python(code, tmp_path, TORCH_CUDA_ARCH_LIST="9.0") == "True"
