"""transformers' own Segformer test suite, run twice: on plain transformers models, and with every
Segformer model passed through ``fastuda.integrations.hf.patch_segformer`` as it is built.

    python bench/hf_segformer_suite.py /path/to/transformers-checkout [-- extra pytest args]

The checkout needs ``tests/`` (tests/models/segformer/test_modeling_segformer.py and what it
imports: tests/test_modeling_common.py, tests/test_configuration_common.py, tests/test_pipeline_mixin.py,
tests/exporters, tests/generation, tests/utils) and the repository's ``conftest.py``, at the
version of the installed transformers; its ``src/transformers`` may be the installed package
(test_pipeline_mixin imports from that path). The tests need ``parameterized`` (a transformers
dev dependency; pass a folder holding it with ``--site``). The Hub is not needed: tests that
download checkpoints are ``@slow`` and skipped, and HF_HUB_OFFLINE=1 is set.

It prints the passed / failed / skipped / error counts of both runs and every test whose outcome
differs, and exits 1 on a difference other than the ones in EXPECTED (one test, which asserts
that an unpatched load picks "sdpa"). Each run is a
pytest process of its own (~2-4 min on 2 CPU cores for the 222 tests of 5.25.0).

The same file is the pytest plugin of the patched run (``-p hf_segformer_suite`` with
FASTUDA_PATCH=1): it wraps ``__init__`` of every Segformer model class so that the outermost
model built, however it is built (``Model(config)``, ``_from_config``, ``from_pretrained``), is
returned patched.
"""

import argparse
import functools
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SUITE = "tests/models/segformer/test_modeling_segformer.py"
# Tests that fail patched by construction, with why. Any other difference makes the exit status 1.
EXPECTED = {
    "test_sdpa_can_dispatch_non_composite_models": "asserts that from_pretrained with no attn_implementation "
    "gives config._attn_implementation == 'sdpa'; patched, the model runs, and says, 'fastuda'",
}
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the plugin


def _install_patch():
    """Wraps the Segformer model classes; returns a function that unwraps them."""
    from transformers.models.segformer import modeling_segformer as seg

    from fastuda.integrations.hf import patch_segformer

    depth = [0]  # SegformerForSemanticSegmentation builds a SegformerModel inside: patch the outer one

    def wrap(cls):
        original = cls.__dict__["__init__"]

        @functools.wraps(original)
        def __init__(self, *args, **kwargs):
            depth[0] += 1
            try:
                original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                patch_segformer(self)

        cls.__init__ = __init__
        return cls, original

    wrapped = [wrap(obj) for obj in list(vars(seg).values())
               if isinstance(obj, type) and issubclass(obj, seg.SegformerPreTrainedModel) and "__init__" in vars(obj)]  # fmt: skip

    def undo():
        for cls, original in wrapped:
            cls.__init__ = original

    return undo


def pytest_configure(config):
    if os.environ.get("FASTUDA_PATCH") == "1":
        config._fastuda_unpatch = _install_patch()


def pytest_unconfigure(config):
    getattr(config, "_fastuda_unpatch", lambda: None)()


# ----------------------------------------------------------------------------- the comparison


def _run(checkout: Path, patched: bool, site: list[str], extra: list[str], xml: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", FASTUDA_PATCH="1" if patched else "0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench"), str(checkout), *site]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", "-p", "hf_segformer_suite",
           f"--junitxml={xml}", *extra]  # fmt: skip
    print(("patched: " if patched else "plain:   ") + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()[-500:]]
    print("   ", tail[0], flush=True)
    if not xml.exists():
        raise SystemExit(f"pytest wrote no report ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    outcomes = {}
    for case in ET.parse(xml).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        detail = next((child.get("message", "") for child in case if child.tag in ("failure", "error")), "")
        outcomes[name] = (kinds[0] if kinds else "passed", re.sub(r"\s+", " ", detail)[:300])
    return outcomes


def _counts(outcomes: dict) -> str:
    kinds = [kind for kind, _ in outcomes.values()]
    return ", ".join(f"{kinds.count(k)} {k}" for k in ("passed", "failure", "error", "skipped"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a transformers checkout (its tests/ and conftest.py)")
    parser.add_argument("--site", action="append", default=[], help="a folder to add to PYTHONPATH (say, one "
                        "holding `parameterized`); repeatable")  # fmt: skip
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments (say, -k attention)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if not (checkout / SUITE).is_file():
        parser.error(f"{checkout / SUITE} does not exist: the checkout needs transformers' tests/ tree")
    runs = {}
    for patched in (False, True):
        xml = checkout / f".fastuda-segformer-{'patched' if patched else 'plain'}.xml"
        xml.unlink(missing_ok=True)
        runs[patched] = _run(checkout, patched, args.site, args.pytest_args, xml)
    plain, patched = runs[False], runs[True]
    print(f"plain:   {_counts(plain)}\npatched: {_counts(patched)}")
    differ = sorted(name for name in plain.keys() | patched.keys() if plain.get(name, ("absent",))[0] != patched.get(name, ("absent",))[0])  # fmt: skip
    for name in differ:
        print(f"  {name}: {plain.get(name, ('absent', ''))[0]} -> {patched.get(name, ('absent', ''))[0]}  "
              f"{patched.get(name, ('', ''))[1] or plain.get(name, ('', ''))[1]}")  # fmt: skip
    lost = sum(plain[n][0] == "passed" for n in plain) - sum(patched[n][0] == "passed" for n in patched)
    print("same outcomes" if not differ else f"{len(differ)} tests differ; patched passes {-lost:+d} vs plain")
    unexpected = [n for n in differ if n.rpartition("::")[2] not in EXPECTED]
    for name in differ:
        if name not in unexpected:
            print(f"  expected: {name.rpartition('::')[2]}: {EXPECTED[name.rpartition('::')[2]]}")
    print(f"{len(unexpected)} unexpected differences")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
