"""Which steps a recorder records: every n-th, or those a callable picks."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from gradlab.errors import GradlabError


def schedule(every: Any) -> Callable[[int], bool]:
    """``step -> bool`` for ``every``: a positive int (every n-th step) or a callable."""
    if callable(every):
        return lambda step: bool(every(step))
    if isinstance(every, bool) or not isinstance(every, numbers.Integral):
        raise GradlabError(
            f"every must be a positive int or a callable(step) -> bool, got {every!r}: pass e.g. every=10"
        )
    if every <= 0:
        raise GradlabError(
            f"every must be a positive number of steps, got {every}: pass e.g. every=1 or every=10"
        )
    n = int(every)
    return lambda step: step % n == 0
