"""fastuda answers to one top-level import name, ``fastuda``, and hides no package someone else publishes.

The repo root's folders (``kernels/``, ``tests/``, ``bench/``, ``csrc/``, ``docs/``) are plain folders,
not packages, and ``fastuda/kernels`` is a link to ``kernels/`` (docs/layout.md). A folder on
``sys.path`` without ``__init__.py`` is at most a namespace portion, which Python passes over for any
regular package or module of the same name anywhere on the path, so the repo root on ``sys.path``
(pytest's rootdir, ``python -m`` run from a checkout, setup.py's own process, a ``PYTHONPATH``
checkout) can no longer hide one.

No test here depends on what this environment has installed. The stand-ins are made by the tests:
a published package of each root folder's name, on a folder of its own, with its dist-info; the one
named ``kernels`` registers, as PyPI's ``kernels`` 0.19.1 does, an ``egg_info.writers`` entry point
into ``kernels._internals``, which setuptools loads while setup.py runs (the failure of 2026-12-07).
The tests of PyPI's real ``kernels`` and of transformers run against whatever is installed here.
"""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest
from test_package import copy_source_tree, run_python

ROOT = pathlib.Path(__file__).resolve().parents[1]
# every folder at the root a checkout has (the stand-ins take their names); fastuda is the package
ROOT_FOLDERS = ["bench", "csrc", "docs", "kernels", "tests"]


def make_published(site: pathlib.Path, names) -> pathlib.Path:
    """Regular packages ``names``, as a distribution installs them, each ``__init__`` saying whose it is."""
    for name in names:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(f"PUBLISHED = {name!r}\n")
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if "kernels" in names:  # PyPI's kernels: the hook setuptools runs in every egg_info
        (site / "kernels" / "_internals").mkdir()
        (site / "kernels" / "_internals" / "__init__.py").write_text("")
        (site / "kernels" / "_internals" / "locking.py").write_text(
            "def write_egg_lockfile(cmd, basename, filename):\n    pass\n"
        )
        (site / "kernels-1.0.dist-info" / "entry_points.txt").write_text(
            "[egg_info.writers]\nkernels.lock = kernels._internals.locking:write_egg_lockfile\n"
        )
    return site


def lines(stdout):
    """``name value`` lines printed by a child process, as a dict."""
    return dict(line.split(" ", 1) for line in stdout.strip().splitlines())


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return make_published(tmp_path_factory.mktemp("published"), ROOT_FOLDERS)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return copy_source_tree(tmp_path_factory.mktemp("checkout"), ("fastuda", *ROOT_FOLDERS))


# this environment's import path (torch, setuptools, pip, whatever .pth files add), less the root and
# its folders (pytest put tests/ there); a venv inside the checkout (.venv) stays
ENV_PATH = [
    p for p in sys.path if os.path.isdir(p) and ROOT not in (pathlib.Path(p).resolve(), pathlib.Path(p).resolve().parent)
]


def pip_install_editable(venv: pathlib.Path, checkout: pathlib.Path, cwd: pathlib.Path, published):
    """``pip install --no-build-isolation --no-deps -e`` of ``checkout`` into a new, empty venv, run
    from ``cwd``, with a published ``kernels`` (and the rest) first on the path. The venv holds
    fastuda alone; the build takes torch and setuptools from this environment (PYTHONPATH)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = "." if cwd == checkout else str(checkout)
    environ = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONSAFEPATH")}
    environ.update(PYTHONPATH=os.pathsep.join([str(published), *ENV_PATH]), FASTUDA_SKIP_CUDA_BUILD="1", MAX_JOBS="2")
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", target]
    return subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def installs(tmp_path_factory, checkout, published):
    """The checkout installed editable twice, once by pip run in its root and once from elsewhere
    (the second build reuses the first one's objects)."""
    tmp = tmp_path_factory.mktemp("installs")
    return {
        where: (venv, pip_install_editable(venv, checkout, cwd, published))
        for where, venv, cwd in [("repo-root", tmp / "venv-root", checkout), ("elsewhere", tmp / "venv-elsewhere", tmp)]
    }


@pytest.mark.parametrize("where", ["repo-root", "elsewhere"])
def test_pip_install_editable_beside_a_published_kernels(where, installs, published, checkout, tmp_path):
    """setuptools runs the published kernels' egg_info hook while setup.py runs with the checkout
    first on sys.path: the install succeeds, and the installed fastuda imports beside it."""
    venv, result = installs[where]
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    code = (
        "import importlib.util, kernels, kernels._internals.locking, fastuda;"
        "print('kernels', kernels.__file__);"
        "print('fastuda', fastuda.__file__);"
        "print('fastuda.kernels', importlib.util.find_spec('fastuda.kernels.pseudo_label').origin)"
    )
    cwd = checkout if where == "repo-root" else tmp_path
    found = lines(run_python(code, cwd, python=venv / "bin" / "python", PYTHONPATH=str(published)).stdout)
    assert found == {
        "kernels": str(published / "kernels" / "__init__.py"),
        "fastuda": str(checkout / "fastuda" / "__init__.py"),
        "fastuda.kernels": str(checkout / "fastuda" / "kernels" / "pseudo_label.py"),
    }


def test_the_root_offers_no_package_but_fastuda():
    """What the repo root puts on sys.path: the package fastuda, setup.py (which pip runs) and
    folders without __init__ (namespace portions at most, which lose to any published package).
    Every folder counts, tracked or not (build/, runs/), except hidden ones (.git, .venv)."""
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert set(ROOT_FOLDERS) | {"fastuda"} <= folders
    packages = sorted(name for name in folders - {"fastuda"} if list((ROOT / name).glob("__init__.*")))
    assert not packages, f"regular packages at the root: {packages}"
    modules = {p.name for p in ROOT.iterdir() if p.suffix in (".py", ".so", ".pyc") or p.name.endswith(".pth")}
    assert modules == {"setup.py"}, f"modules at the root: {sorted(modules)}"
    assert (ROOT / "fastuda" / "kernels").is_symlink()
    assert (ROOT / "fastuda" / "kernels").resolve() == ROOT / "kernels"


FIND = (  # where fastuda and its kernels come from (the kernel file's real path, links resolved)
    "import importlib.util, os;"
    "print('fastuda', importlib.util.find_spec('fastuda').origin);"
    "print('fastuda.kernels', os.path.realpath(importlib.util.find_spec('fastuda.kernels.pseudo_label').origin))"
)


@pytest.mark.parametrize("where", ["repo-root", "elsewhere", "checkout-on-pythonpath"])
def test_published_packages_win_over_the_root_folders(where, published, checkout, tmp_path):
    """A published package named like any root folder, installed after the root on sys.path, is
    the one ``import`` gives; fastuda and fastuda.kernels still come from the checkout (this one,
    installed by make; or a copy on PYTHONPATH, which comes before the install)."""
    cwd = ROOT if where == "repo-root" else tmp_path
    home = checkout if where == "checkout-on-pythonpath" else ROOT
    before = [checkout] if where == "checkout-on-pythonpath" else []
    code = FIND + "".join(f";import {n}; print({n!r}, {n}.__file__)" for n in ROOT_FOLDERS)
    result = run_python(code, cwd, PYTHONPATH=os.pathsep.join(map(str, [*before, published])))
    assert result.returncode == 0, result.stderr[-3000:]
    found = lines(result.stdout)
    for name in ROOT_FOLDERS:
        assert found[name] == str(published / name / "__init__.py"), f"import {name} gave {found[name]}"
    assert found["fastuda"] == str(home / "fastuda" / "__init__.py")
    assert found["fastuda.kernels"] == str(home / "kernels" / "pseudo_label.py")


@pytest.mark.parametrize("where", ["repo-root", "elsewhere", "checkout-on-pythonpath"])
def test_without_a_published_package_nothing_of_fastuda_answers(where, installs, checkout, tmp_path):
    """With no package installed under the root folders' names, none of fastuda's code answers to
    them. The environments hold fastuda alone: the venvs pip installed it into, or, for the checkout
    on PYTHONPATH, this interpreter under -S (no site-packages). Installed and used from elsewhere,
    nothing answers at all. Where the checkout's root is on sys.path (the working directory, or
    PYTHONPATH), Python offers each folder there as a namespace portion, as it does for any folder
    (none can opt out): no __init__, nothing run on import, and it loses to any installed package."""
    flags, python, pythonpath, cwd = [], None, [], tmp_path
    if where == "repo-root":
        python, cwd = installs["repo-root"][0] / "bin" / "python", checkout
    elif where == "elsewhere":
        python = installs["elsewhere"][0] / "bin" / "python"
    else:
        flags, pythonpath = ["-S"], [checkout]
    code = FIND + "".join(
        f";spec = importlib.util.find_spec({n!r});"
        f"print({n!r}, spec and (spec.origin, list(spec.submodule_search_locations)))"
        for n in ROOT_FOLDERS
    )
    result = run_python(code, cwd, *flags, python=python, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    assert result.returncode == 0, result.stderr[-3000:]
    found = lines(result.stdout)
    assert found["fastuda"] == str(checkout / "fastuda" / "__init__.py")
    assert found["fastuda.kernels"] == str(checkout / "kernels" / "pseudo_label.py")
    for name in ROOT_FOLDERS:
        want = None if where == "elsewhere" else (None, [str(checkout / name)])
        assert found[name] == str(want), f"import {name} finds {found[name]}"


def real_kernels_init():
    """The __init__.py of PyPI's kernels where this environment has it installed, else None."""
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return None
    return pathlib.Path(dist.locate_file("kernels/__init__.py"))


@pytest.mark.parametrize("where", ["repo-root", "elsewhere", "checkout-on-pythonpath"])
def test_installed_kernels_and_transformers_import(where, checkout, tmp_path):
    """This environment's own packages: ``import kernels`` gives PyPI's where it is installed, and
    ``from transformers import SegformerModel`` works (transformers >= 5.25 imports kernels)."""
    pytest.importorskip("transformers")
    cwd = ROOT if where == "repo-root" else tmp_path
    pythonpath = [checkout] if where == "checkout-on-pythonpath" else []
    code = (
        "import importlib.util, sys;"
        "from transformers import SegformerModel;"
        "spec = importlib.util.find_spec('kernels');"
        "print('kernels', spec and spec.origin)"
    )
    result = run_python(code, cwd, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    assert result.returncode == 0, result.stderr[-3000:]
    real = real_kernels_init()
    assert lines(result.stdout)["kernels"] == str(real), "import kernels must give PyPI's kernels, or nothing"
