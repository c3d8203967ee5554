"""The one exception type that user mistakes raise.

Its message is a single line that names the fix. The CLI prints it without a traceback and
exits with status 2; library users can catch it (it is a ``ValueError``).
"""

from __future__ import annotations


class GradlabError(ValueError):
    """Bad input from the user: a one-line message that says what to change."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none:
    what a one-line error quotes of an underlying failure."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
