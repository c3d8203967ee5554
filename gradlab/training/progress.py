"""Progress for long work: a tqdm bar on a terminal, plain lines everywhere else.

A bar redraws itself in place, which a log file or a CI console cannot show (tqdm disables
itself there), so a redirected run would print nothing for minutes. Off a terminal, a line is
written every ``every_pct`` percent of the work instead, with the postfix (loss, accuracy) and
the elapsed time.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


class LineProgress:
    """A tqdm-like progress that prints ``label: step k/N (p%), key value ..., T s`` lines."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, every_pct: float = 5.0):
        self.total = max(1, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.step_every = max(1, math.ceil(self.total * every_pct / 100.0))
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = time.monotonic()
        self._last_printed = 0
        self._closed = False

    def set_postfix(self, values: dict[str, Any], refresh: bool = False) -> None:  # noqa: ARG002
        self.postfix = dict(values)

    def due(self, n: int = 1) -> bool:
        """Whether ``update(n)`` will print a line: the caller refreshes the postfix then, and
        only then (reading a loss off the GPU costs a sync)."""
        done = self.n + n
        return done - self._last_printed >= self.step_every or done >= self.total

    def update(self, n: int = 1) -> None:
        printing = self.due(n)
        self.n += n
        if printing:
            self._print()

    def _print(self) -> None:
        self._last_printed = self.n
        pct = 100.0 * self.n / self.total
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        elapsed = time.monotonic() - self.started
        print(f"{self.label}: step {self.n}/{self.total} ({pct:.0f}%){extra}, {elapsed:.0f} s",
              file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed and self.n != self._last_printed and self.n > 0:
            self._print()
        self._closed = True


class _Silent:
    def due(self, n: int = 1) -> bool:  # noqa: ARG002
        return False

    def set_postfix(self, values: dict[str, Any], refresh: bool = False) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, label: str, *, disable: bool = False, stream: TextIO | None = None):
    """A tqdm bar when ``stream`` (stderr by default) is a terminal, :class:`LineProgress` lines
    otherwise, nothing when ``disable``."""
    if disable:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", lambda: False)
    if isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=label[:30], unit="step", file=stream, leave=False,
                   dynamic_ncols=True)
        bar.due = lambda n=1: False  # the bar takes its postfix at each flush
        return bar
    return LineProgress(total, label, stream=stream)
