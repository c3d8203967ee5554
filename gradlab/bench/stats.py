"""Order statistics of step times: quantiles, the spread of per-round ratios, a round's figure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) with linear interpolation between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    below = math.floor(pos)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (pos - below)


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and range of a sample (e.g. per-round ratios)."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [float(v) for v in values]
        return cls(quantile(vals, 0.5), quantile(vals, 0.25), quantile(vals, 0.75),
                   min(vals, default=math.nan), max(vals, default=math.nan), len(vals))


def round_statistic(times: Sequence[float], phases: Sequence[int], period: int) -> float:
    """One round's step time for an arm whose work repeats every ``period`` steps.

    The mean over the phases of the schedule of each phase's median time: for ``period == 1``
    the plain median; for a recorder that records every k-th step, the recorded phase weighs
    1/k, as it does in training, while one slow step caused by something else is ignored.
    Phases with no step in the round are left out.
    """
    if len(times) != len(phases):
        raise ValueError("times and phases differ in length")
    by_phase: dict[int, list[float]] = {}
    for t, ph in zip(times, phases, strict=True):
        by_phase.setdefault(ph % period, []).append(t)
    if not by_phase:
        return math.nan
    return sum(quantile(v, 0.5) for v in by_phase.values()) / len(by_phase)
