"""The supported range of torch / triton / transformers: the warning at import, and the constraints
files it must agree with (fastuda/_versions.py, docs/installing.md)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from fastuda._versions import SUPPORTED, UnsupportedVersionWarning, check_versions, unsupported

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pins(path: pathlib.Path) -> dict[str, str]:
    """name -> version of every ``name==version`` line (names normalised as pip does)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)\s*==\s*([^\s;]+)", line)
            assert match, f"{path.name}: not a pin: {line!r}"
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_constraints_pin_the_newest_tested_releases():
    tested = pins(ROOT / "constraints.txt")
    for name, (_, newest) in SUPPORTED.items():
        assert major_minor(tested[name]) == newest, f"constraints.txt pins {name} {tested[name]}, _versions says {newest}"
    assert {"torch", "torchvision", "triton", "timm", "transformers", "numpy", "pytest", "setuptools"} <= set(tested)


def test_oldest_constraints_are_the_gpu_machines_set():
    oldest = pins(ROOT / "constraints-oldest.txt")
    assert (oldest["torch"], oldest["triton"], oldest["transformers"]) == ("2.11.0", "3.6.0", "5.17.0")
    assert oldest["torchvision"] == "0.26.0"  # the torchvision of torch 2.11
    for name, (oldest_release, _) in SUPPORTED.items():
        assert major_minor(oldest[name]) == oldest_release, f"constraints-oldest.txt: {name} {oldest[name]}"


def test_setup_requires_at_least_the_oldest_set():
    setup = (ROOT / "setup.py").read_text()
    oldest = pins(ROOT / "constraints-oldest.txt")
    for name in ("torch", "triton", "transformers", "timm", "numpy"):
        assert re.search(rf'"{name}>={re.escape(oldest[name])}[";,]', setup), f"setup.py: {name}>={oldest[name]}"


@pytest.mark.parametrize(
    "name, version, words",
    [
        ("torch", "2.10.1+cu128", ["torch 2.10.1+cu128", "torch 2.11 to 2.14", "pip install 'torch>=2.11,<2.15'"]),
        ("torch", "2.15.0", ["torch 2.15.0", "torch 2.11 to 2.14", "newer than any fastuda was tested with"]),
        ("triton", "3.5.0", ["triton 3.5.0", "triton 3.6 to 3.8"]),
        ("transformers", "4.57.6", ["transformers 4.57.6", "transformers 5.17 to 5.25"]),
        ("transformers", "6.0.0.dev0", ["transformers 6.0.0.dev0", "make test-latest"]),
    ],
)
def test_out_of_range_is_one_message_naming_version_and_range(name, version, words):
    (message,) = unsupported({name: version})
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("version", ["2.11.0", "2.11.0a0+git1234", "2.14.1+cu130", "2.14.9", None, "unknown"])
def test_in_range_missing_or_unreadable_says_nothing(version):
    assert unsupported({"torch": version, "triton": "3.6.0", "transformers": "5.25.0"}) == []


def test_check_warns_once_per_package(monkeypatch):
    monkeypatch.setattr("fastuda._versions.installed_version", {"torch": "2.9.0", "triton": "3.9.1"}.get)
    with pytest.warns(UnsupportedVersionWarning) as caught:
        check_versions()
    assert sorted(str(w.message).split(" ")[2] for w in caught) == ["torch", "triton"]


def test_import_fastuda_warns_about_an_installed_transformers_outside_the_range(tmp_path):
    """In a fresh process: metadata of a transformers 4.57.6 first on the path (a stand-in, so the
    test does not depend on what is installed here) gives one warning at ``import fastuda``."""
    info = tmp_path / "transformers-4.57.6.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: transformers\nVersion: 4.57.6\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", "import fastuda"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "UnsupportedVersionWarning: " in line]
    warnings = [line for line in warnings if "transformers" in line]  # torch / triton: as installed
    assert len(warnings) == 1, result.stderr
    assert "transformers 4.57.6 is installed" in warnings[0] and "5.17 to 5.25" in warnings[0]
