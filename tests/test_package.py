"""Packaging and the backend switch."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import fastuda.ops as ops

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ, capture_output=True, text=True)


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_kernels_install_as_fastuda_kernels(where, tmp_path):
    cwd = ROOT if where == "repo" else tmp_path
    code = (
        "import importlib.util, fastuda.kernels, fastuda.ops, fastuda._C;"
        "from fastuda.kernels import pseudo_label, cross_entropy;"
        "print(fastuda.kernels.__file__)"
    )
    if where == "elsewhere":  # the install must not claim the top-level name `kernels` (taken on PyPI)
        code += ";assert importlib.util.find_spec('kernels') is None"
    result = run_python(code, cwd)
    assert result.returncode == 0, result.stderr
    assert pathlib.Path(result.stdout.strip()) == ROOT / "kernels" / "__init__.py"


def test_kernels_and_csrc_do_not_import_fastuda():
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            assert not any(n.split(".")[0] == "fastuda" for n in names), f"{path.name} imports {names}"


def test_backend_switch():
    assert ops.get_backend() == "auto"
    with ops.use_backend("reference"):
        assert ops.get_backend() == "reference"
    assert ops.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.set_backend("cuda")


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(tmp_path):
    code = (
        "import torch, fastuda.ops as ops;"
        "ops.set_backend('triton');"
        "ops.pseudo_label(torch.randn(1, 3, 4, 4))"
    )
    result = run_python(code, tmp_path, CUDA_VISIBLE_DEVICES="")
    assert result.returncode != 0
    assert "set TRITON_INTERPRET=1" in result.stderr


def test_backend_env_var(tmp_path):
    result = run_python("import fastuda.ops as ops; print(ops.get_backend())", tmp_path, FASTUDA_BACKEND="reference")
    assert result.stdout.strip() == "reference"
    result = run_python("import fastuda.ops", tmp_path, FASTUDA_BACKEND="fast")
    assert "backend must be one of" in result.stderr


def test_reference_backend_matches_default_on_cpu():
    label = torch.randint(0, 5, (2, 6, 7))
    with ops.use_backend("reference"):
        want = ops.class_presence(label, 5)
    torch.testing.assert_close(ops.class_presence(label, 5), want)


def test_value_check_modes():
    target = torch.full((1, 3, 3), 7)
    logits = torch.randn(1, 5, 3, 3)
    assert ops.get_value_checks() == "cpu"
    with pytest.raises(ValueError, match="target must hold class indices"):
        ops.weighted_cross_entropy(logits, target)
    ops.set_value_checks("off")
    assert torch.isnan(ops.weighted_cross_entropy(logits, target))
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.set_value_checks(True)


def test_debug_env_checks_every_device(tmp_path):
    code = "import fastuda.ops as ops; print(ops.get_value_checks())"
    assert run_python(code, tmp_path, FASTUDA_DEBUG="1").stdout.strip() == "always"
    assert run_python(code, tmp_path).stdout.strip() == "cpu"
