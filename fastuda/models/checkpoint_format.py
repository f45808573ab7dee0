"""fastuda's own checkpoint format: the ``format`` entry of a training checkpoint, and bringing
older files to it (``read_checkpoint`` calls ``upgrade_fastuda`` on every fastuda checkpoint).

Format 2: the SegFormer head concatenates its levels shallowest first (``daformer_head.FUSE_ORDER``).
Unmarked files were written either before 9e7f30b or from 9e7f30b until the entry came (deepest
first); the run record beside the file tells them apart.
"""

import json
import subprocess
import warnings
from pathlib import Path

from .daformer_head import FUSE_KEY, fuse_levels, reverse_fuse_blocks

# fastuda checkpoint format (the "format" entry of a training checkpoint). Files without it were
# written either before 9e7f30b or from 9e7f30b until this entry came (SegFormer head deepest
# first); ``upgrade_fastuda`` tells them apart. 2: SegFormer head shallowest first.
FORMAT = 2
# The commit that made the SegFormer head concatenate deepest first; its descendants up to FORMAT 2
# wrote unmarked checkpoints in that order. Main's commits of that era, for installs without git:
_DEEPEST_FIRST_SINCE = "9e7f30bbc840600d5550ff068bf046833e07a2a3"
_DEEPEST_FIRST_COMMITS = frozenset({
    "4bf36af571ffb154749abc979c3a8cab65e91414", "a985180b7d67ca5f2bd74e096e950dec26c72b73",
    "2b796ef5fe883ea1ee1d41f1e20a17fef585430d", "fa238ca43e3aa12881be8b94ef13c91133a53997",
    "8b9e09262144fbfdf10aea862b9490b397957f1f", "f7aa461fa18b5e81838b6bbad8b41f8553bd88d0",
    "727a0141ca01af8cbe93a72b6b65c9b2f8f041e7", "15b35731ced648a9067808da7be1871af35f4dbb",
    "48d60d62ae93f706be7eccbd7d4935012df715ec", "7ebbfa690429e3f0dcead033e47a9adfbc61f70c",
    "68f84ea36ffb864fc298dacb465f20b611946575", "eadc7885550fc09e5084840899f19e9540f5ad95",
    "95cde3cc9fbd492e1ce73152ce444f658e009254", "3acfc32961bb97ea46157e53fb0cfd3c001cd836",
    "9e7f30bbc840600d5550ff068bf046833e07a2a3",
})  # fmt: skip


def _is_ancestor(ancestor: str, commit: str) -> bool | None:
    """Whether ``commit`` descends from ``ancestor`` in the git checkout fastuda runs from; None
    when that cannot be told (no git, not a checkout, an unknown commit)."""
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "-C", str(root), "merge-base", "--is-ancestor", ancestor, commit],
                              capture_output=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(done.returncode)


def _written_deepest_first(path) -> bool:
    """Whether an unmarked fastuda checkpoint (no ``format``) was written while fastuda's SegFormer
    head concatenated deepest first: from the git commit in the run record (``config.json`` beside
    the checkpoint, ``run.git_commit``). Without one that tells, the newer order is assumed, with a
    warning."""
    commit = None
    if path is not None:
        try:
            record = json.loads((Path(path).parent / "config.json").read_text())
            commit = record["run"]["git_commit"]
        except (OSError, ValueError, KeyError, TypeError):
            commit = None
    if commit in _DEEPEST_FIRST_COMMITS:
        return True
    if isinstance(commit, str) and (descends := _is_ancestor(_DEEPEST_FIRST_SINCE, commit)) is not None:
        return descends
    where = f"{path}" if path is not None else "a fastuda checkpoint passed as a dict"
    warnings.warn(
        f"{where} has a SegFormer head and no format entry, and no run record says which fastuda wrote it: "
        f"assuming commit {_DEEPEST_FIRST_SINCE[:7]} or later (fuse conv deepest first; converted). If it was "
        "written before 2026-12-01, set its 'format' entry to 2 to load it unchanged",
        stacklevel=3,
    )
    return True


def upgrade_fastuda(obj: dict, path=None) -> dict:
    """A fastuda training checkpoint in ``FORMAT``: a new dict (``obj`` is left alone) whose
    student / teacher SegFormer head has its fuse conv in ``FUSE_ORDER`` and whose ``format`` is
    ``FORMAT``; ``fuse_reversed`` is True where the blocks were reversed (``restore`` then
    reverses the optimiser's moments too). Marked checkpoints come back as they are."""
    if obj.get("format", 1) >= FORMAT:
        return obj
    out = {**obj, "format": FORMAT}
    heads = [k for k in ("student", "teacher") if isinstance(obj.get(k), dict) and FUSE_KEY in obj[k]]
    if heads and _written_deepest_first(path):
        for k in heads:
            out[k] = {**obj[k], FUSE_KEY: reverse_fuse_blocks(obj[k][FUSE_KEY], fuse_levels(obj[k]))}
        out["fuse_reversed"] = True
    return out
