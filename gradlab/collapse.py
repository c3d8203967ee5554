"""Collapse and shattering: what the gradient norms cannot see, from how alike a batch's examples are.

A network can pass every norm test and still not learn. Measured on the main job (plain34
against resnet34, Adam, synthetic data), both nets keep healthy dL/dh norms across depth while
only resnet34 learns. What separates them is the per-example signal:

- **Collapse (forward).** ``act_cos`` is the mean pairwise cosine, across the batch, of the
  per-example rows of a layer's output. Near 1 every input gives nearly the same output: the
  layer no longer depends on its input, so the net cannot tell classes apart however large its
  gradients are. plain34's upper convolutions reach 0.95-0.99 within 100 steps; resnet34's stay
  far lower.
- **Shattering (backward, at init).** ``act_grad_cos_class`` is the mean cosine of dL/dh over
  pairs of examples with the same label. At the output it is 1 by construction; a residual net
  keeps some of that class structure down through its layers, a deep plain net loses it within
  a few layers (Balduzzi et al. 2017, "shattered gradients"): the update of its lower layers
  then averages out to noise.

Both read stored tables only (no torch). Each phase gets a finding with the number, the layer
and the margin to its threshold; a value within the band around a threshold is
``borderline``, so a verdict does not flip on noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradlab.diagnose import (
    LayerMatrix,
    layer_matrices,
    layer_positions,
    phase_windows,
    window_profile,
)

FORWARD_METRIC = "act_cos"
CLASS_METRIC = "act_grad_cos_class"
METRICS = (FORWARD_METRIC, CLASS_METRIC)


@dataclass(frozen=True)
class CollapseThresholds:
    """The numbers behind the collapse and shattering findings."""

    collapsed_cos: float = 0.9  # median forward batch cosine of the upper layers: collapsed
    shattered_cos: float = 0.05  # median same-class dL/dh cosine of the upper layers at init
    band: float = 0.05  # +- this much around a threshold is borderline
    upper_fraction: float = 0.5  # "upper layers": this top fraction of weight-layer positions


THRESHOLDS = CollapseThresholds()


def _upper_rows(m: LayerMatrix, meta: dict[str, Any], t: CollapseThresholds,
                weight_only: bool) -> np.ndarray:
    """Rows of the upper layers (by weight-layer position), optionally weight layers only,
    without the output layer itself (whose same-class cosine is 1 by construction)."""
    positions = layer_positions(m.layers, m.depths, meta)
    top = positions.max() if positions.size else 0
    cut = top - t.upper_fraction * (top - positions.min()) if positions.size else 0
    keep = (positions >= cut) & (positions < top)
    if weight_only:
        types = {str(e.get("name")): str(e.get("type", "")) for e in meta.get("layers") or []
                 if isinstance(e, dict)}
        if types:
            is_weight = np.array([("conv" in types.get(n, "").lower() or "linear" in types.get(n, "").lower())
                                  for n in m.layers])
            if (keep & is_weight).any():
                keep &= is_weight
    return np.flatnonzero(keep)


def _finding(run_name: str, signal: str, phase: str, m: LayerMatrix, window: slice,
             rows: np.ndarray, threshold: float, above_is_bad: bool, bad_word: str,
             t: CollapseThresholds) -> dict[str, Any] | None:
    idx, values, _ = window_profile(m, window)
    sel = np.isin(idx, rows) & np.isfinite(values)
    if not sel.any():
        return None
    vals, names = values[sel], [m.layers[i] for i in idx[sel]]
    value = float(np.median(vals))
    extreme = int(np.argmax(vals) if above_is_bad else np.argmin(vals))
    distance = (value - threshold) if above_is_bad else (threshold - value)
    if distance >= t.band:
        verdict = bad_word
    elif distance > -t.band:
        verdict = "borderline"
    else:
        verdict = "healthy"
    return {
        "run": run_name, "signal": signal, "phase": phase,
        "step_from": int(m.steps[window.start]), "step_to": int(m.steps[window.stop - 1]),
        "verdict": verdict, "value": value, "threshold": threshold, "margin": float(distance),
        "n_layers": int(sel.sum()), "extreme_layer": names[extreme], "extreme_value": float(vals[extreme]),
    }


def similarity_findings(run: Any, *, thresholds: CollapseThresholds = THRESHOLDS,
                        matrices: dict[str, LayerMatrix] | None = None) -> list[dict[str, Any]]:
    """Collapse (every phase) and shattering (init) findings of one stored run.

    Each finding: run, signal (``act_cos`` or ``act_grad_cos_class``), phase, step_from,
    step_to, verdict (``collapsed``/``shattered``, ``borderline`` or ``healthy``), value (the
    median over the upper layers), threshold, margin (distance past the threshold, positive =
    on the bad side), n_layers, extreme_layer and extreme_value. Empty when the run recorded
    neither signal (they are in the recorder's ``all`` set).
    """
    meta = run.meta if isinstance(run.meta, dict) else {}
    if matrices is None or not set(METRICS) & set(matrices):
        matrices = layer_matrices(run.layers, METRICS)
    out: list[dict[str, Any]] = []
    fwd = matrices.get(FORWARD_METRIC)
    if fwd is not None and len(fwd.steps):
        rows = _upper_rows(fwd, meta, thresholds, weight_only=True)
        for phase, window in phase_windows(len(fwd.steps)).items():
            f = _finding(run.name, FORWARD_METRIC, phase, fwd, window, rows,
                         thresholds.collapsed_cos, True, "collapsed", thresholds)
            if f is not None:
                out.append(f)
    cls = matrices.get(CLASS_METRIC)
    if cls is not None and len(cls.steps):
        rows = _upper_rows(cls, meta, thresholds, weight_only=True)
        window = phase_windows(len(cls.steps))["init"]
        f = _finding(run.name, CLASS_METRIC, "init", cls, window, rows,
                     thresholds.shattered_cos, False, "shattered", thresholds)
        if f is not None:
            out.append(f)
    return out


def finding_words(f: dict[str, Any]) -> str:
    """One finding in words, with its numbers."""
    if f["signal"] == FORWARD_METRIC:
        what = (f"upper layers' outputs have batch cosine {f['value']:.2f} "
                f"(max {f['extreme_value']:.2f} at {f['extreme_layer']}; collapsed at >= {f['threshold']:.2f})")
    else:
        what = (f"same-class dL/dh cosine of the upper layers {f['value']:.3f} "
                f"(min {f['extreme_value']:.3f} at {f['extreme_layer']}; shattered below {f['threshold']:.2f})")
    steps = f"step {f['step_from']}" if f["step_from"] == f["step_to"] else f"steps {f['step_from']}-{f['step_to']}"
    return f"{f['phase']} ({steps}): {f['verdict']}: {what}"
