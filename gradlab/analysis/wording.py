"""Numbers in words, shared by the verdicts, the suggestions and the plain-text diagnosis."""

from __future__ import annotations

import numpy as np


def fmt(x: float | None, digits: int = 2) -> str:
    """A norm or ratio for reading: ``n/a`` for missing, ``0`` for underflow, ``inf``, or
    scientific notation outside 0.01..10000."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if not np.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits + 1}g}"


def margin_words(rule: str, margin: float) -> str:
    """How far a rule reached past (or fell short of) its threshold, e.g. ``"... 30% past its threshold"``."""
    if not np.isfinite(margin):
        return ""
    side = "past" if margin >= 0 else "short of"
    return f"{rule} rule {abs(margin):.0%} {side} its threshold"
