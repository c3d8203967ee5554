"""The one straight-line fit gradlab makes: decades of gradient norm per layer of depth.

Both the diagnosis (measured profiles) and the mean-field theory (predicted ones) describe a
depth profile by the least-squares slope of log10(norm) against depth, so they share this fit.
"""

from __future__ import annotations

import math

import numpy as np


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` against ``x`` over the pairs where both are finite.

    NaN when fewer than two distinct ``x`` remain (no line is determined). A slope of ``-0.0``
    is returned as ``0.0``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0]) + 0.0
