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


def run_python(code, cwd, *flags, python=None, **env):
    """``python [flags] -c code`` in ``cwd`` (this interpreter unless ``python``), without this
    process's TRITON_INTERPRET, PYTHONPATH and PYTHONSAFEPATH; ``env`` sets variables."""
    drop = ("TRITON_INTERPRET", "PYTHONPATH", "PYTHONSAFEPATH")
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(env)
    cmd = [str(python or sys.executable), *flags, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_kernels_install_as_fastuda_kernels(where, tmp_path):
    """kernels/ is fastuda.kernels (fastuda/kernels links to it); the name kernels alone is left to
    whoever publishes it (tests/test_shadowing.py)."""
    cwd = ROOT if where == "repo" else tmp_path
    code = (
        "import fastuda.kernels, fastuda.ops, fastuda._C;"
        "from fastuda.kernels import pseudo_label, cross_entropy;"
        "print(pseudo_label.__file__)"
    )
    result = run_python(code, cwd)
    assert result.returncode == 0, result.stderr
    assert pathlib.Path(result.stdout.strip()) == ROOT / "fastuda" / "kernels" / "pseudo_label.py"
    assert pathlib.Path(result.stdout.strip()).resolve() == ROOT / "kernels" / "pseudo_label.py"


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


def test_data_imports_its_submodules_on_first_use():
    """``import fastuda.data`` imports no torch (``python -m fastuda.data.convert`` checks its
    arguments first); a loader named as its submodule (fastuda.data.cityscapes) stays the loader,
    whichever is imported first."""
    code = ("import sys, fastuda.data\nassert 'torch' not in sys.modules, 'fastuda.data imports torch'\n"
            "import fastuda.data.loader, fastuda.data.cityscapes\nfrom fastuda.data import cityscapes, labels\n"
            "assert callable(cityscapes) and fastuda.data.synthia.__name__ == 'synthia', fastuda.data.synthia\n"
            "assert labels.__name__ == 'fastuda.data.labels' and fastuda.data.stats.__name__ == 'fastuda.data.stats'\n"
            "assert set(fastuda.data.__all__) <= set(dir(fastuda.data))")  # fmt: skip
    result = run_python(code, ROOT)
    assert result.returncode == 0, result.stderr


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


def extension_file() -> pathlib.Path:
    import fastuda._C

    return pathlib.Path(fastuda._C.__file__)


def test_has_cuda_kernels_matches_the_built_file():
    from fastuda._ext import has_cuda_kernels

    linked_cudart = b"libcudart.so" in extension_file().read_bytes()  # the CUDA build's DT_NEEDED entry
    assert has_cuda_kernels() == linked_cudart


def test_extension_without_cuda_kernels_is_refused_on_a_gpu_machine(tmp_path):
    # torch sees a GPU, the loaded _C registered no CUDA kernels: import fails, naming the fix
    code = (
        "import torch; torch.cuda.is_available = lambda: True;"
        "import fastuda._ext as ext; ext.has_cuda_kernels = lambda: False;"
        "import fastuda.ops"
    )
    result = run_python(code, tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastuda._C (") and "has no CUDA kernels but torch sees a GPU" in last
    assert f"`cd {ROOT} && pip install --no-build-isolation --no-deps -e .`" in last
    assert "FASTUDA_SKIP_CUDA_BUILD unset" in last


def copy_source_tree(dest: pathlib.Path, folders=("fastuda", "kernels", "csrc")) -> pathlib.Path:
    """What a source distribution holds (or, with more ``folders``, a checkout), without this
    checkout's build outputs."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.so", "build", "*.egg-info")
    for name in folders:  # fastuda/kernels stays a link to ../kernels
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def check_installed_copy(site: pathlib.Path, cwd: pathlib.Path) -> str:
    code = (
        "import torch, fastuda, fastuda.kernels.pseudo_label, fastuda.ops, fastuda._C, fastuda.runtime.pictures;"
        "from fastuda._ext import has_cuda_kernels;"
        "label = torch.tensor([[[0, 2], [255, 2]]]);"
        "print(fastuda.__file__, fastuda.kernels.pseudo_label.__file__, fastuda._C.__file__, has_cuda_kernels());"
        "print(torch.ops.fastuda.class_presence(label, 3, 255).tolist())"
    )
    result = run_python(code, cwd, PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stderr[-3000:]
    paths, presence = result.stdout.strip().splitlines()[-2:]
    assert all(p.startswith(str(site)) for p in paths.split()[:3]), paths
    assert presence == "[[True, False, True, True]]"
    return paths.split()[3]


@pytest.mark.slow
def test_pip_install_non_editable_falls_back_to_cpu_when_the_cuda_build_fails(tmp_path):
    """`pip install .` with a CUDA toolkit that cannot build (CUDA_HOME without nvcc): one
    warning line, then a working CPU-only extension."""
    src = copy_source_tree(tmp_path / "src")
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "FASTUDA_SKIP_CUDA_BUILD"}
    env.update(CUDA_HOME=str(tmp_path / "no-cuda"), MAX_JOBS="2")
    cmd = [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation", "--target", str(site), "."]
    result = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARNING: fastuda:" in line]
    if torch.version.cuda is not None:
        assert len(warnings) == 1 and "building the CPU-only extension instead" in warnings[0], warnings
    assert check_installed_copy(site, tmp_path) == "False"


@pytest.mark.slow
def test_build_wheel_holds_the_package_kernels_and_extension(tmp_path):
    pytest.importorskip("build")
    import zipfile

    src = copy_source_tree(tmp_path / "src")
    env = dict(os.environ, FASTUDA_SKIP_CUDA_BUILD="1", MAX_JOBS="2")
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist")]
    result = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    (wheel,) = (tmp_path / "dist").glob("fastuda-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        top_level = zf.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
        zf.extractall(tmp_path / "site")
    assert any(n.startswith("fastuda/_C.") and n.endswith(".so") for n in names)
    assert {"fastuda/kernels/pseudo_label.py", "fastuda/runtime/pictures.py", "fastuda/_ext.py"} <= set(names)
    assert not any(n.startswith(("kernels/", "csrc/", "tests/", "bench/")) for n in names)
    assert top_level == ["fastuda"], top_level
    assert "Requires-Dist: tensorboard" in metadata and "Requires-Dist: pillow" in metadata
    assert check_installed_copy(tmp_path / "site", tmp_path) == "False"
