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


#: Longest error line the CLI prints; longer ones keep their start and their end (the fix).
MAX_MESSAGE_CHARS = 400


def terminal_safe(text: str) -> str:
    """``text`` with control characters (escape sequences, carriage returns, bells) written
    as visible escapes, so what a run or a user stored cannot drive the terminal."""
    out = []
    for char in str(text):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0 or char in "\u2028\u2029\u202e\u202d\u200f\u200e":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters: the head and the tail kept, the middle
    replaced by `` ... `` (the tail of a gradlab error names the fix)."""
    text = str(text)
    if len(text) <= limit:
        return text
    marker = " ... "
    tail = limit // 3
    head = limit - tail - len(marker)
    return text[:head] + marker + text[-tail:]


def one_line_message(exc_or_text: BaseException | str) -> str:
    """What the CLI prints for an error: one line, terminal-safe, at most
    :data:`MAX_MESSAGE_CHARS` characters."""
    text = first_line(exc_or_text) if isinstance(exc_or_text, BaseException) else str(exc_or_text)
    return shorten(terminal_safe(" ".join(text.split()) if "\n" in text else text))
