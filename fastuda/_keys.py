"""Every config key with its value and a one-line description, for ``python -m fastuda.train
--list-keys [PRESET]``. The descriptions are the comments beside (or above) each dataclass field
(STYLE.md 8: a comment per field), read from the source, so they have one home."""

import ast
import dataclasses
import functools
import inspect
import io
import tokenize


@functools.cache
def _comments(cls: type) -> dict[str, str]:
    """field name -> its comment: the one on its line(s), else the comment lines just above it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen install): names and values only
        return {}
    lines = source.splitlines()
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").replace("fmt: skip", "").strip()
    found = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        inline = [by_line[n] for n in range(node.lineno, node.end_lineno + 1) if by_line.get(n)]
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, by_line.get(n, ""))
            n -= 1
        found[node.target.id] = " ".join(inline or above)
    return found


def describe(cfg, prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted key, value in ``cfg``, description) for every leaf of the config, in field order."""
    rows = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(value, f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, value, _comments(type(cfg)).get(f.name, "")))
    return rows


def format_keys(cfg) -> str:
    """One line per key: ``key=value  description``, aligned; the values are valid overrides."""
    rows = [(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}", d) for k, v, d in describe(cfg)]
    width = max(len(left) for left, _ in rows)
    return "\n".join(f"{left:<{width}}  {text}".rstrip() for left, text in rows)
