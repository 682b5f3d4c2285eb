"""One mechanism for errors a user can cause: raise `UserError`, and every CLI prints one line and exits non-zero."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (path, YAML, option, data), reported as one line, never a traceback."""


def cli_main(func: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI `main` so a `UserError` (or Ctrl-C) ends the process with one line and a non-zero exit."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
