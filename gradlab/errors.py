"""The one exception type that user mistakes raise.

Its message is a single line that names the fix. The CLI prints it without a traceback and
exits with status 2; library users can catch it (it is a ``ValueError``).
"""

from __future__ import annotations


class GradlabError(ValueError):
    """Bad input from the user: a one-line message that says what to change."""
