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
