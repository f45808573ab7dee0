"""What a config field accepts: hand-written checks declared next to each field
(``dataclasses.field`` metadata; ``fastuda.config.schema``, ``fastuda.models.config``) and
``check_fields``, which applies them. Outside ``fastuda.config`` so that the model configs,
which live with the models, need nothing of the training config.

Not pydantic: the configs stay plain dataclasses (presets assign attributes, checkpoints store
``dataclasses.asdict``), the overrides keep their own parser, and every message names the
dotted key, the value and the expectation in one line, with a close match for names."""

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from typing import Any

from fastuda.errors import UserError


@dataclasses.dataclass(frozen=True)
class Check:
    """``test(value) -> bool`` and the words for what it accepts ("an int >= 1")."""

    expected: str
    test: Callable[[Any], bool]
    choices: tuple = ()  # for names: close matches are suggested from these


def one_of(*choices: str) -> Check:
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices, choices)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Check:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return Check(f"a number in {left}{lo:g}, {hi:g}{right}",
                 lambda v: (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi))  # fmt: skip


def at_least(lo: float) -> Check:
    return Check(f"a number >= {lo:g}", lambda v: v >= lo)


POSITIVE = Check("a number > 0", lambda v: v > 0)
NON_NEGATIVE = at_least(0)


def multiple_of(n: int) -> Check:
    return Check(f"a positive multiple of {n}", lambda v: v > 0 and v % n == 0)


def each(check: Check) -> Check:
    return Check(f"values each {check.expected.removeprefix('a number ')}", lambda v: all(check.test(x) for x in v))


def optional(check: Check) -> Check:
    return Check(f"None or {check.expected}", lambda v: v is None or check.test(v), check.choices)


def path_template() -> Check:
    def ok(v: str) -> bool:
        try:
            return bool(v.format(name="x"))
        except (KeyError, IndexError, ValueError):
            return False

    return Check("a non-empty path, with {name} as its only placeholder", ok)


NAME = Check("a non-empty name of letters, digits, '_', '-' or '.'",
             lambda v: bool(v) and all(c.isalnum() or c in "_-." for c in v))  # fmt: skip


def field(default=dataclasses.MISSING, check: Check | None = None, *, factory=dataclasses.MISSING):
    """A dataclass field whose accepted values are ``check`` (validated at load)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"check": check} if check else {})


# ---------------------------------------------------------------- checking every field

def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s, e.g. (1,2)"
        return "(" + ", ".join(_type_name(a).removeprefix("an ").removeprefix("a ") for a in args) + ")"
    if tp is type(None):
        return "None"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp):
    """``value`` as type ``tp`` (ints for floats, lists for tuples), or raise TypeError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm)
            except TypeError:
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise TypeError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if isinstance(value, tp):
        return value
    raise TypeError


def check_fields(node, prefix: str) -> None:
    """Every field of ``node`` (recursively) coerced to its type and checked by its ``check``."""
    hints = typing.get_type_hints(type(node))
    for f in dataclasses.fields(node):
        key, value = prefix + f.name, getattr(node, f.name)
        if dataclasses.is_dataclass(f.type) or dataclasses.is_dataclass(hints[f.name]):
            check_fields(value, key + ".")
            continue
        try:
            value = _coerce(value, hints[f.name])
        except TypeError:
            raise UserError(f"{key}={value!r}: expected {_type_name(hints[f.name])}") from None
        setattr(node, f.name, value)
        check = f.metadata.get("check")
        if check is not None and not check.test(value):
            close = difflib.get_close_matches(str(value), check.choices, n=1, cutoff=0.5) if check.choices else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{key}={value!r}: expected {check.expected}{hint}")

