"""Pieces shared by the CLI commands: turning user errors into one line and exit status 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

USAGE_ERROR_EXIT = 2


def fail(message: str) -> None:
    """Print ``Error: message`` on stderr (one line, terminal-safe, shortened) and exit 2."""
    from gradlab.errors import one_line_message

    click.echo(f"Error: {one_line_message(message)}", err=True)
    sys.exit(USAGE_ERROR_EXIT)


def user_errors(func: F) -> F:
    """Run a command body, turning :class:`GradlabError` into a one-line error and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gradlab.errors import GradlabError, first_line

        try:
            return func(*args, **kwargs)
        except GradlabError as exc:
            fail(first_line(exc))
        except (MemoryError, RuntimeError) as exc:
            # The size checks estimate; an allocation can still fail (other processes, a
            # model the estimate cannot build). That too is one line, not a traceback.
            if not _out_of_memory(exc):
                raise
            fail(f"out of memory ({first_line(exc)}): use a smaller model or --batch-size")

    return wrapper  # type: ignore[return-value]


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "cannot allocate memory" in text
