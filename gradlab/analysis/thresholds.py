"""The numbers behind every verdict and suggestion of the diagnosis, in one frozen record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind every verdict and suggestion (see :mod:`gradlab.analysis.diagnose`)."""

    ratio_decades: float = 3.0  # last-to-first change of 1000x or more is vanishing/exploding
    slope_decades_per_layer: float = 0.1  # fitted change per weight layer that counts as a trend
    slope_min_layers: int = 6  # ... but only over at least this many layer positions
    slope_min_decades: float = 1.0  # ... and only when the fitted trend adds up to 10x or more
    growth_since_init_decades: float = 3.0  # median norm grown 1000x since init: exploding
    borderline_band: float = 0.25  # within +-25% of a threshold the call is "borderline", not a flip
    saturated_frac: float = 0.2  # mean saturated fraction that explains a decay
    dead_frac: float = 0.2  # mean fraction of dead ReLU units (0 for every example) that explains a decay
    clip_percentiles: tuple[float, float, float] = (10.0, 50.0, 90.0)  # of the total norm


#: The thresholds in use; documented in the docs ("Diagnosis").
THRESHOLDS = Thresholds()


def thresholds_dict(thresholds: Thresholds = THRESHOLDS) -> dict[str, Any]:
    """The thresholds as a plain dict (for reports and the docs)."""
    return asdict(thresholds)
