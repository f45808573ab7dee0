"""The torch, triton and transformers releases fastuda is tested with, checked at ``import fastuda``.

The supported range of each runs from the oldest tested set (``constraints-oldest.txt``, which
``make test-oldest`` installs: the GPU machines' torch 2.11 / triton 3.6 / transformers 5.17) to the
set ``make`` installs by default (``constraints.txt``). ``tests/test_versions.py`` holds both files
to this table, so moving the constraints forward (docs/installing.md) means moving it too.

A release outside the range gets one ``UnsupportedVersionWarning`` per package at ``import
fastuda``, naming the version and the range, instead of a failure deep inside a later call. Newer
releases are usually fine: the warning says that nobody has run the tests on them yet. The check
reads installed metadata (or the version of a module already imported), so ``import fastuda``
still imports neither torch nor transformers.
"""

import importlib.metadata
import re
import sys
import warnings

# package: (oldest, newest) tested major.minor; any patch release of those is in range
SUPPORTED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "torch": ((2, 11), (2, 14)),
    "triton": ((3, 6), (3, 8)),
    "transformers": ((5, 17), (5, 25)),
}


class UnsupportedVersionWarning(UserWarning):
    """An installed torch, triton or transformers outside the range fastuda is tested with."""


def installed_version(name: str) -> str | None:
    """The version of ``name`` this process uses: the imported module's, else the installed
    distribution's; None when neither exists (transformers is optional, triton Linux-only)."""
    version = getattr(sys.modules.get(name), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)  # 2.14.1+cu130, 3.6.0, 5.25.0.dev0
    return (int(match[1]), int(match[2])) if match else None


def _text(release: tuple[int, int]) -> str:
    return f"{release[0]}.{release[1]}"


def unsupported(versions: dict[str, str | None]) -> list[str]:
    """One message per package of ``SUPPORTED`` whose version in ``versions`` is out of range."""
    messages = []
    for name, (oldest, newest) in SUPPORTED.items():
        version = versions.get(name)
        release = None if version is None else _major_minor(version)
        if release is None or oldest <= release <= newest:
            continue  # not installed, or a version string we cannot read: nothing to say
        span = f"{_text(oldest)} to {_text(newest)}"
        if release < oldest:
            advice = f"install a supported one: pip install '{name}>={_text(oldest)},<{newest[0]}.{newest[1] + 1}'"
        else:
            advice = "it is newer than any fastuda was tested with; `make test-latest` runs the suite against it"
        messages.append(f"fastuda supports {name} {span}, but {name} {version} is installed: {advice}")
    return messages


def check_versions() -> None:
    """Warns once per out-of-range package; called by ``fastuda/__init__.py``."""
    for message in unsupported({name: installed_version(name) for name in SUPPORTED}):
        warnings.warn(message, UnsupportedVersionWarning, stacklevel=3)
