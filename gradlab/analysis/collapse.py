"""Collapse and shattering: what the gradient norms cannot see, from how alike a batch's examples are.

A network can pass every norm test and still not learn. Measured on the main job (plain34
against resnet34, Adam, synthetic data), both nets keep healthy dL/dh norms across depth while
only resnet34 learns. What separates them is the per-example signal, read from
``act_grad_cos_class``: the mean cosine of dL/dh at a layer's output over pairs of examples
with the same label.

- **Collapse.** When the upper layers no longer depend on the input, the network's output is
  the same for every input, so dL/d(logits) = softmax - onehot(label) depends on the label
  alone, and so does dL/dh below it: every example of a class gets the same gradient and the
  same-class cosine approaches 1. plain34's upper layers sit at 0.85-0.94 from step 100 on;
  resnet34, which learns, at about 0.6 at step 100 and lower later.
- **Shattering (at init).** At the output the same-class cosine is 1 by construction; a residual
  net keeps some of that class structure down through its layers, a deep plain net loses it
  within a few layers (Balduzzi et al. 2017, "shattered gradients"): the updates of its lower
  layers then average out to noise. resnet56 keeps 0.22 in its upper half at init.

The label-free forward signal ``act_cos`` (batch cosine of the layer outputs) is reported
beside them; it is high in both nets' upper convolutions (a large shared component), so it is
not used for the verdict.

Both read stored tables only (no torch). Each phase gets a finding with the number, the layer
and the margin to its threshold; a value within the band around a threshold is
``borderline``, so a verdict does not flip on noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gradlab.analysis.grids import LayerMatrix, layer_matrices
from gradlab.analysis.phases import phase_windows, window_profile
from gradlab.analysis.traits import WEIGHT_TYPE, layer_positions
from gradlab.common import metrics as M

#: The label-free forward signal, reported beside the verdict.
FORWARD_METRIC = M.ACT_COS
#: The signal that decides: same-class dL/dh cosine.
CLASS_METRIC = M.ACT_GRAD_COS_CLASS
METRICS = (FORWARD_METRIC, CLASS_METRIC)


@dataclass(frozen=True)
class CollapseThresholds:
    """The numbers behind the collapse and shattering findings."""

    collapsed_cos: float = 0.7  # median same-class dL/dh cosine of the upper layers: collapsed
    shattered_cos: float = 0.05  # ... at init, below this: shattered
    band: float = 0.1  # +- this much around the collapse threshold is borderline
    shattered_band: float = 0.03  # ... and around the shattering threshold
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
            is_weight = np.array([bool(WEIGHT_TYPE.search(types.get(n, ""))) for n in m.layers])
            if (keep & is_weight).any():
                keep &= is_weight
    return np.flatnonzero(keep)


def _finding(run_name: str, signal: str, phase: str, m: LayerMatrix, window: slice,
             rows: np.ndarray) -> dict[str, Any] | None:
    idx, values, _ = window_profile(m, window)
    sel = np.isin(idx, rows) & np.isfinite(values)
    if not sel.any():
        return None
    vals, names = values[sel], [m.layers[i] for i in idx[sel]]
    return {
        "run": run_name, "signal": signal, "phase": phase,
        "step_from": int(m.steps[window.start]), "step_to": int(m.steps[window.stop - 1]),
        "value": float(np.median(vals)), "n_layers": int(sel.sum()),
        "max_layer": names[int(np.argmax(vals))], "max_value": float(np.max(vals)),
        "min_layer": names[int(np.argmin(vals))], "min_value": float(np.min(vals)),
        "verdict": "healthy", "threshold": np.nan, "margin": np.nan,
    }


def _judge(f: dict[str, Any], t: CollapseThresholds) -> dict[str, Any]:
    """Collapsed (any phase) or shattered (init) by the same-class cosine, with the margin to
    the nearer threshold (positive = on the bad side)."""
    value = f["value"]
    collapse = value - t.collapsed_cos
    if collapse > -t.band:
        f.update(threshold=t.collapsed_cos, margin=float(collapse),
                 verdict="collapsed" if collapse >= t.band else "borderline")
    elif f["phase"] == "init":
        shatter = t.shattered_cos - value
        f.update(threshold=t.shattered_cos, margin=float(shatter))
        if shatter >= t.shattered_band:
            f["verdict"] = "shattered"
        elif shatter > -t.shattered_band:
            f["verdict"] = "borderline"
    else:
        f.update(threshold=t.collapsed_cos, margin=float(collapse))
    return f


def similarity_findings(run: Any, *, thresholds: CollapseThresholds = THRESHOLDS,
                        matrices: dict[str, LayerMatrix] | None = None) -> list[dict[str, Any]]:
    """Collapse and shattering findings of one stored run, one per phase and signal.

    Each finding: run, signal (``act_grad_cos_class`` decides; ``act_cos`` is reported with
    verdict ``healthy``), phase, step_from, step_to, value (the median over the upper weight
    layers, without the output layer), n_layers, max_layer/max_value, min_layer/min_value,
    verdict (``collapsed``, ``shattered``, ``borderline`` or ``healthy``), threshold and
    margin. Empty when the run recorded neither signal (they are in the recorder's ``all`` set).
    """
    meta = run.meta if isinstance(run.meta, dict) else {}
    if matrices is None or not set(METRICS) & set(matrices):
        matrices = layer_matrices(run.layers, METRICS)
    out: list[dict[str, Any]] = []
    for signal in (CLASS_METRIC, FORWARD_METRIC):
        m = matrices.get(signal)
        if m is None or not len(m.steps):
            continue
        rows = _upper_rows(m, meta, thresholds, weight_only=True)
        for phase, window in phase_windows(len(m.steps)).items():
            f = _finding(run.name, signal, phase, m, window, rows)
            if f is not None:
                out.append(_judge(f, thresholds) if signal == CLASS_METRIC else f)
    return out


def finding_words(f: dict[str, Any]) -> str:
    """One finding in words, with its numbers."""
    if f["signal"] == FORWARD_METRIC:
        what = (f"upper layers' outputs have batch cosine {f['value']:.2f} "
                f"(max {f['max_value']:.2f} at {f['max_layer']})")
    else:
        what = (f"same-class dL/dh cosine of the upper layers {f['value']:.3f} "
                f"(from {f['min_value']:.3f} at {f['min_layer']} to {f['max_value']:.3f} at {f['max_layer']}; "
                f"collapsed at >= {THRESHOLDS.collapsed_cos:.2f}"
                + (f", shattered below {THRESHOLDS.shattered_cos:.2f} at init" if f["phase"] == "init" else "")
                + ")")
    steps = f"step {f['step_from']}" if f["step_from"] == f["step_to"] else f"steps {f['step_from']}-{f['step_to']}"
    verdict = "" if f["signal"] == FORWARD_METRIC else f"{f['verdict']}: "
    return f"{f['phase']} ({steps}): {verdict}{what}"
