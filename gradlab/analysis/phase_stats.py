"""What a phase's steps add to its depth profile: non-finite and skipped steps, growth since
init, saturated and dead fractions, the total norm's percentiles and how often clipping fired."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradlab.analysis.grids import LayerMatrix
from gradlab.analysis.thresholds import Thresholds
from gradlab.common import metrics as M

Series = dict[str, tuple[np.ndarray, np.ndarray]]


def run_had_nonfinite(meta: dict[str, Any]) -> bool:
    """Whether the run's meta says a step was non-finite (stopped on, or skipped)."""
    counts = [meta.get("nonfinite_steps"), meta.get("skipped_steps")]
    if any(isinstance(c, (int, float)) and c > 0 for c in counts):
        return True
    return isinstance(meta.get("nonfinite_first"), dict) and meta["nonfinite_first"].get("step") is not None


def mark_nonfinite_run(row: dict[str, Any], meta: dict[str, Any]) -> None:
    """A run that stopped or skipped on a non-finite step is non-finite in its last phase, even
    when no recorded step saw the NaN (it fell between recorded steps or past the last)."""
    if row["verdict"] == "non-finite" or not run_had_nonfinite(meta):
        return
    first = meta.get("nonfinite_first") if isinstance(meta.get("nonfinite_first"), dict) else {}
    where = f"step {first.get('step')}" if first.get("step") is not None else "an unrecorded step"
    if first.get("layer"):
        where += f" in {first['layer']}"
    row["verdict"] = "non-finite"
    row["evidence"] = f"the run met a non-finite value at {where}; " + str(row["evidence"])


def layer_logs(idx: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """log10 of each layer's positive, finite value, by row index."""
    ok = np.isfinite(values) & (values > 0)
    return dict(zip(idx[ok].tolist(), np.log10(values[ok]).tolist()))


def growth(init_logs: dict[int, float] | None, logs: dict[int, float]) -> float:
    """Median growth in decades since init over the layers positive at both times.

    Like with like: a profile whose input side underflowed to 0.0 since init keeps only its
    upper layers positive, and their median against the median of every layer at init would
    read as growth where nothing grew.
    """
    if not init_logs:
        return np.nan
    common = [k for k in logs if k in init_logs]
    if not common:
        return np.nan
    return float(np.median([logs[k] - init_logs[k] for k in common]))


def window_mean(m: LayerMatrix | None, lo: int, hi: int) -> float:
    """Mean over layers and the steps lo..hi of a fraction metric (NaN when absent)."""
    if m is None:
        return np.nan
    cols = (m.steps >= lo) & (m.steps <= hi)
    if not cols.any():
        return np.nan
    vals = m.values[:, cols][m.present[:, cols]]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else np.nan


def count_events(series: Series, metrics: Sequence[str], lo: int, hi: int) -> int:
    """The number of distinct steps in lo..hi where any of the flag ``metrics`` is set."""
    steps: set[int] = set()
    for name in metrics:
        if name in series:
            s, v = series[name]
            mask = (s >= lo) & (s <= hi) & (v != 0)
            steps.update(int(x) for x in s[mask])
    return len(steps)


def total_norms(series: Series, grad: LayerMatrix | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The total gradient norm per step: before clipping when known, else the recorder's,
    else the root of the sum of squared per-layer norms."""
    for name in (M.CLIP_NORM_BEFORE, M.TOTAL_GRAD_NORM):
        if name in series:
            return series[name]
    if grad is None:
        return None
    sq = np.where(grad.present, grad.values, 0.0) ** 2
    return grad.steps, np.sqrt(sq.sum(axis=0))


def percentiles(values: np.ndarray, thresholds: Thresholds) -> tuple[float, float, float]:
    """The thresholds' percentiles of the finite ``values`` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (np.nan, np.nan, np.nan)
    return tuple(float(x) for x in np.percentile(finite, thresholds.clip_percentiles))  # type: ignore[return-value]


def _top_layers(grad: LayerMatrix, fired: np.ndarray) -> str:
    """The three layers with the largest mean share of the squared norm at the fired steps."""
    cols = np.isin(grad.steps, fired)
    if not cols.any():
        return ""
    vals = np.where(grad.present[:, cols] & np.isfinite(grad.values[:, cols]), grad.values[:, cols], 0.0)
    sq = vals ** 2
    total = sq.sum(axis=0)
    ok = total > 0
    if not ok.any():
        return ""
    share = (sq[:, ok] / total[ok]).mean(axis=1)
    top = np.argsort(share)[::-1][:3]
    return ", ".join(f"{grad.layers[i]} {share[i]:.0%}" for i in top if share[i] > 0)


def clip_stats(series: Series, grad: LayerMatrix | None, lo: int, hi: int) -> dict[str, Any]:
    """How often clipping fired between steps lo..hi, and which layers held the norm then."""
    out: dict[str, Any] = {"clip_fired": np.nan, "clip_rate": np.nan, "clip_top_layers": ""}
    if M.CLIP_FIRED not in series:
        return out
    s, v = series[M.CLIP_FIRED]
    mask = (s >= lo) & (s <= hi)
    if not mask.any():
        return out
    fired = s[mask][v[mask] > 0]
    out["clip_fired"] = int(fired.size)
    out["clip_rate"] = float(fired.size / mask.sum())
    if grad is not None and fired.size:
        out["clip_top_layers"] = _top_layers(grad, fired)
    return out
