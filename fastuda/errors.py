"""Errors a user can fix, and how the command-line entry points show them.

``UserError`` carries a one-line message that names the config key, argument or file,
the value, and what was expected. The CLIs print it as ``error: <message>`` on stderr
and exit with code 2, without a traceback; any other exception is a bug and keeps its
traceback.
"""

import functools
import sys
from collections.abc import Callable


class UserError(ValueError):
    """A mistake in the user's input (config, data, checkpoint, arguments), with a message for people."""


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Runs a CLI's ``main``; a ``UserError`` becomes ``error: <message>`` and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cli(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorates a CLI's ``main(argv)`` so that calling it (in process or as ``python -m``)
    goes through ``run_cli``."""
    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        return run_cli(main, argv)

    return wrapped
