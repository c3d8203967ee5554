"""The verdict of one depth profile (norm against layer position), with its margin to the threshold.

The rules, their order and their thresholds are described in :mod:`gradlab.analysis.diagnose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradlab.analysis.thresholds import THRESHOLDS, Thresholds
from gradlab.analysis.wording import fmt, margin_words
from gradlab.common.fit import slope
from gradlab.errors import GradlabError

#: Verdicts from the most to the least severe.
VERDICTS = ("non-finite", "exploding", "vanishing", "collapsed", "borderline", "healthy", "no-data")


def _empty_profile(n_layers: int) -> dict[str, Any]:
    return {
        "verdict": "no-data", "n_layers": n_layers, "first_layer": None, "last_layer": None,
        "first_norm": np.nan, "last_norm": np.nan, "first_to_last_ratio": np.nan,
        "decades_lost": np.nan, "decades_per_layer": np.nan, "fit_layers": 0, "n_zero": 0,
        "underflow": False, "n_nonfinite": 0, "margin": np.nan, "leaning": None,
        "evidence": "no layer recorded this metric",
    }


def _measure(out: dict[str, Any], d: np.ndarray, v: np.ndarray, positive: np.ndarray) -> None:
    """The first-to-last ratio, the decades lost and the fitted slope, over the finite values."""
    if np.isfinite(v[0]) and np.isfinite(v[-1]):
        if v[-1] > 0:
            out["first_to_last_ratio"] = float(v[0] / v[-1])
        elif v[0] > 0:
            out["first_to_last_ratio"] = float("inf")
    if positive.sum() >= 2:
        logs = np.log10(v[positive])
        out["decades_lost"] = float(logs[-1] - logs[0])
        if np.ptp(d[positive]) > 0:
            out["decades_per_layer"] = slope(d[positive], logs)
            out["fit_layers"] = int(len(np.unique(d[positive])))


def _strengths(out: dict[str, Any], trend: float, thresholds: Thresholds) -> dict[str, float]:
    """Each rule's strength: how far its quantity reaches relative to its threshold (1.0 is the
    threshold itself), signed + toward vanishing and - toward exploding."""
    fitted, lost = out["decades_per_layer"], out["decades_lost"]
    strengths = {}
    if np.isfinite(lost):
        strengths["first-to-last"] = lost / thresholds.ratio_decades
    long_enough = out["fit_layers"] >= thresholds.slope_min_layers
    if long_enough and np.isfinite(fitted) and fitted * trend > 0:
        strengths["fitted slope"] = float(np.sign(fitted)) * min(
            abs(fitted) / thresholds.slope_decades_per_layer, abs(trend) / thresholds.slope_min_decades)
    return strengths


def diagnose_profile(depths: Sequence[float], norms: Sequence[float], *,
                     layers: Sequence[str] | None = None,
                     thresholds: Thresholds = THRESHOLDS) -> dict[str, Any]:
    """A verdict with its evidence for one depth profile (norm against layer position).

    ``depths`` are layer positions from the input (any unit; the slope is per unit), ``norms``
    the norms at those positions (0.0, NaN and inf allowed), ``layers`` optional names.
    Returns a dict: verdict, n_layers, first_layer, last_layer, first_norm, last_norm,
    first_to_last_ratio, decades_lost, decades_per_layer, fit_layers, n_zero, underflow,
    n_nonfinite and evidence (the numbers in words).
    """
    d = np.asarray(depths, dtype=np.float64)
    v = np.asarray(norms, dtype=np.float64)
    if d.shape != v.shape or d.ndim != 1:
        raise GradlabError(f"depths and norms must be 1-d and of equal length, got {d.shape} and {v.shape}")
    names = list(layers) if layers is not None else [None] * len(d)
    order = np.argsort(d, kind="stable")
    d, v = d[order], v[order]
    names = [names[i] for i in order]
    out = _empty_profile(int(len(v)))
    if len(v) == 0:
        return out
    finite = np.isfinite(v)
    zero = finite & (v == 0.0)
    positive = finite & (v > 0.0)
    n_zero, n_nonfinite = int(zero.sum()), int((~finite).sum())
    out.update(first_layer=names[0], last_layer=names[-1], first_norm=float(v[0]),
               last_norm=float(v[-1]), n_zero=n_zero, n_nonfinite=n_nonfinite,
               underflow=bool(n_zero))
    _measure(out, d, v, positive)
    # Underflow on the input side: a zero at or below the median position.
    input_side = d <= np.median(d)
    underflow_at_input = bool((zero & input_side).any()) or (n_zero > 0 and not positive.any())
    fitted = out["decades_per_layer"]
    span = float(np.ptp(d[positive])) if positive.any() else 0.0
    trend = fitted * span if np.isfinite(fitted) else 0.0
    evidence = _evidence_words(out, trend)
    strengths = _strengths(out, trend, thresholds)
    if strengths:
        rule, strength = max(strengths.items(), key=lambda kv: abs(kv[1]))
        out["margin"] = abs(strength) - 1.0
        out["leaning"] = "vanishing" if strength > 0 else "exploding"
    if n_nonfinite:
        verdict = "non-finite"
        evidence = f"{n_nonfinite} of {len(v)} layers hold NaN or inf; " + evidence
    elif not positive.any() and n_zero == 0:
        verdict, evidence = "no-data", "no finite value recorded"
    elif underflow_at_input:
        verdict = "vanishing"
        out["leaning"] = "vanishing"
        evidence = (f"{n_zero} of {len(v)} layers underflow to 0.0 (below float32) on the input "
                    f"side; " + evidence)
    elif strengths:
        verdict = banded_verdict(out["margin"], out["leaning"], thresholds)
        evidence += f"; {margin_words(rule, out['margin'])}"
    else:
        verdict = "healthy"
    out["verdict"] = verdict
    out["evidence"] = evidence
    return out


def banded_verdict(margin: float, leaning: str | None, thresholds: Thresholds) -> str:
    """The verdict for a rule that reaches ``margin`` past its threshold (relative, -0.3 is 30%
    short of it): firm beyond the band, ``borderline`` inside it, ``healthy`` below it.

    The band keeps a verdict from flipping on noise: runs repeated with another thread count or
    seed move a profile by a few tenths of a decade, which can cross a threshold but not the
    band's width (0.75 decades on the 3-decade rule).
    """
    band = thresholds.borderline_band
    if margin >= band:
        return leaning or "healthy"
    if margin > -band:
        return "borderline"
    return "healthy"


def _evidence_words(p: dict[str, Any], trend: float) -> str:
    parts = [f"first/last = {fmt(p['first_to_last_ratio'])}"]
    if np.isfinite(p["decades_lost"]):
        parts.append(f"{p['decades_lost']:+.1f} decades lost toward the input")
    if np.isfinite(p["decades_per_layer"]):
        parts.append(f"fit {p['decades_per_layer']:+.3f} decades/layer over {p['fit_layers']} "
                     f"positions ({trend:+.1f} decades)")
    return ", ".join(parts)
