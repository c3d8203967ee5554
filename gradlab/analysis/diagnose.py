"""Verdicts with numbers: does the gradient vanish, explode or stay healthy, where and when?

The diagnosis reads stored tables only (pandas and numpy; never torch), so it runs wherever a
run directory can be read. It looks at *depth profiles*: the norm of one metric for every
layer, ordered from the input to the output.

Conventions
-----------
- **first** is the layer nearest the input (smallest depth), **last** the one nearest the
  output (largest depth).
- ``first_to_last_ratio = norm(first) / norm(last)``. Vanishing toward the input gives a small
  ratio (1e-9 means nine decades lost); exploding toward the input gives a large one. It is
  0.0 when the first layer underflowed to exactly 0.0.
- ``decades_per_layer`` is the slope of a least-squares fit of log10(norm) against layer
  position, over the finite, positive values only. It reads as *decades lost per layer walking
  from the output toward the input*: +1.0 means every layer closer to the input holds a 10x
  smaller norm (vanishing); negative values mean the norm grows toward the input (exploding);
  0 is a flat profile.
- ``decades_lost`` is log10(norm(last) / norm(first)) over the outermost finite, positive
  layers (positive = lost toward the input).
- In :func:`diagnose_run` a layer's position counts weight layers (convolutions and linear
  layers) from the input: ``conv1`` is 0, the BatchNorm and ReLU after it are also 0, the next
  convolution is 1, and so on. Without layer types in the run's meta, every layer that has a
  weight gradient counts; without those, every layer counts.
- Zeros are data: a norm of exactly 0.0 is below float32's smallest value (underflow). log10
  is never taken of it; zeros are counted (``n_zero``) and make the verdict ``vanishing`` when
  they sit on the input side of the network.

Verdicts (checked in this order, thresholds in :data:`THRESHOLDS`):

1. ``non-finite``: any NaN or infinity in the profile (or a non-finite / skipped step in the
   phase's steps);
2. ``vanishing``: zeros on the input half of the profile (underflow), or ``decades_lost >=
   ratio_decades``, or a fit of ``decades_per_layer >= slope_decades_per_layer`` over at least
   ``slope_min_layers`` positions that amounts to at least ``slope_min_decades`` in total;
3. ``exploding``: the mirror image (``decades_lost <= -ratio_decades``, or the fit at or below
   ``-slope_decades_per_layer`` ...), or, after initialisation, a profile whose median norm grew
   by ``growth_since_init_decades`` or more since the init phase;
4. ``healthy`` otherwise; ``no-data`` for an empty profile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.analysis.grids import LayerMatrix, layer_matrices, step_series
from gradlab.analysis.phase_stats import (
    Series,
    clip_stats,
    count_events,
    growth,
    layer_logs,
    mark_nonfinite_run,
    percentiles,
    run_had_nonfinite,
    total_norms,
    window_mean,
)
from gradlab.analysis.phases import PHASES, event_windows, phase_windows, window_profile
from gradlab.analysis.profile import VERDICTS, banded_verdict, diagnose_profile
from gradlab.analysis.suggestions import suggest
from gradlab.analysis.suggestions import suggest as _suggest  # noqa: F401  (its name before the split)
from gradlab.analysis.text import format_diagnosis
from gradlab.analysis.thresholds import THRESHOLDS, Thresholds, thresholds_dict
from gradlab.analysis.traits import layer_positions, meta_layers, model_traits
from gradlab.analysis.wording import margin_words
from gradlab.common import metrics as M

__all__ = [
    "THRESHOLDS",
    "Thresholds",
    "PHASES",
    "PROFILE_METRICS",
    "VERDICTS",
    "LayerMatrix",
    "layer_matrices",
    "step_series",
    "phase_windows",
    "window_profile",
    "layer_positions",
    "model_traits",
    "diagnose_profile",
    "diagnose_run",
    "diagnose_runs",
    "format_diagnosis",
    "run_had_nonfinite",
    "thresholds_dict",
]

#: The depth profiles that get a verdict: weight gradients and back-propagated dL/dh (the
#: schema's PROFILE_SIGNALS, in the order the diagnosis lists its rows).
PROFILE_METRICS = (M.GRAD_NORM, M.ACT_GRAD_NORM)

#: Dead ReLU units: the fraction of a layer's units that output 0 for every example of the
#: batch. (The fraction of zero outputs, ``act_zero_frac``, is about 1/2 for any ReLU layer
#: and says nothing about dead units.)
DEAD_METRIC = M.ACT_DEAD_UNITS

#: Columns of :func:`diagnose_run`'s frame, in order.
COLUMNS = (
    "run", "metric", "phase", "step_from", "step_to", "verdict", "n_layers", "first_layer",
    "last_layer", "first_norm", "last_norm", "first_to_last_ratio", "decades_lost",
    "decades_per_layer", "fit_layers", "n_zero", "underflow", "n_nonfinite", "margin", "leaning",
    "nonfinite_steps",
    "growth_since_init", "saturated_frac", "dead_frac", "clip_fired", "clip_rate",
    "clip_top_layers", "total_norm_p10", "total_norm_p50", "total_norm_p90", "evidence",
    "suggestion", "reason",
)


@dataclass
class _RunFacts:
    """What every (metric, phase) row of one run reads."""

    name: str
    meta: dict[str, Any]
    matrices: dict[str, LayerMatrix]
    series: Series
    traits: dict[str, Any]
    pcts: tuple[float, ...]
    thresholds: Thresholds

    @property
    def grad(self) -> LayerMatrix | None:
        return self.matrices.get(M.GRAD_NORM)


def diagnose_run(run: Any, *, thresholds: Thresholds = THRESHOLDS,
                 matrices: dict[str, LayerMatrix] | None = None) -> pd.DataFrame:
    """The diagnosis of one stored run: one row per (metric, phase), see :data:`COLUMNS`.

    ``run`` is a :class:`gradlab.store.Run` (anything with ``name``, ``meta``, ``layers`` and
    ``steps``). Metrics are ``grad_norm`` (layers with parameters only) and
    ``act_grad_norm``; phases ``init``, ``early`` and ``late`` as far as the recorded steps
    allow. ``matrices`` lets a caller that already built the grids pass them in.
    """
    meta = run.meta if isinstance(run.meta, dict) else {}
    if matrices is None:
        matrices = layer_matrices(run.layers, (*PROFILE_METRICS, M.ACT_SATURATED_FRAC, DEAD_METRIC))
    series = step_series(run.steps)
    totals = total_norms(series, matrices.get(M.GRAD_NORM))
    pcts = percentiles(totals[1], thresholds) if totals is not None else (np.nan,) * 3
    facts = _RunFacts(run.name, meta, matrices, series, model_traits(meta), pcts, thresholds)
    rows: list[dict[str, Any]] = []
    for metric in PROFILE_METRICS:
        m = matrices.get(metric)
        if m is not None:
            rows.extend(_metric_rows(facts, metric, m))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _kept_layers(facts: _RunFacts, metric: str, m: LayerMatrix) -> np.ndarray:
    """Which rows of ``m`` enter the profile: for weight gradients, the layers with parameters."""
    no_params = {str(e["name"]) for e in meta_layers(facts.meta)
                 if isinstance(e.get("num_params"), (int, float)) and e["num_params"] == 0}
    if metric == M.GRAD_NORM and no_params:
        return np.array([name not in no_params for name in m.layers])
    return np.ones(len(m.layers), dtype=bool)


def _metric_rows(facts: _RunFacts, metric: str, m: LayerMatrix) -> list[dict[str, Any]]:
    """The rows of one metric, one per phase."""
    keep = _kept_layers(facts, metric, m)
    grad = facts.grad
    positions = layer_positions(m.layers, m.depths, facts.meta, grad.depths if grad is not None else None)
    windows = phase_windows(len(m.steps))
    events = event_windows(m.steps, windows)
    init_logs: dict[int, float] | None = None
    rows = []
    for phase, window in windows.items():
        idx, values, nonfinite = window_profile(m, window)
        sel = keep[idx]
        idx, values, nonfinite = idx[sel], values[sel], nonfinite[sel]
        prof = diagnose_profile(positions[idx], values, layers=[m.layers[i] for i in idx],
                                thresholds=facts.thresholds)
        prof["n_nonfinite"] = int(max(prof["n_nonfinite"], int((nonfinite > 0).sum())))
        lo, hi = int(m.steps[window.start]), int(m.steps[window.stop - 1])
        row: dict[str, Any] = {"run": facts.name, "metric": metric, "phase": phase,
                               "step_from": lo, "step_to": hi, **prof}
        _judge_events(row, facts.series, events[phase])
        logs = layer_logs(idx, values)
        if phase == "init":
            init_logs = logs
            row["growth_since_init"] = 0.0
        else:
            _judge_growth(row, growth(init_logs, logs), facts.thresholds)
        if phase == list(windows)[-1]:
            mark_nonfinite_run(row, facts.meta)
        _add_context(row, facts, lo, hi, events[phase])
        rows.append(row)
    return rows


def _judge_events(row: dict[str, Any], series: Series, steps: tuple[int, int]) -> None:
    """Non-finite or skipped steps in the phase make it non-finite, like NaN in the profile."""
    bad_steps = count_events(series, (M.NONFINITE, M.SKIPPED), *steps)
    row["nonfinite_steps"] = bad_steps
    if (row["n_nonfinite"] or bad_steps) and row["verdict"] != "non-finite":
        row["verdict"] = "non-finite"
        row["evidence"] = (f"{row['n_nonfinite']} layers with NaN/inf and {bad_steps} "
                           f"non-finite or skipped steps in this phase; " + row["evidence"])


def _judge_growth(row: dict[str, Any], grown: float, thresholds: Thresholds) -> None:
    """After init, a profile grown by ``growth_since_init_decades`` is exploding (borderline
    within the band), unless a more severe verdict already holds."""
    row["growth_since_init"] = float(grown)
    if not (np.isfinite(grown) and row["verdict"] in ("healthy", "borderline", "vanishing")):
        return
    g_margin = grown / thresholds.growth_since_init_decades - 1.0
    g_verdict = banded_verdict(g_margin, "exploding", thresholds)
    if g_verdict == "exploding" or (g_verdict == "borderline" and row["verdict"] == "healthy"):
        row["verdict"], row["leaning"], row["margin"] = g_verdict, "exploding", g_margin
        row["evidence"] = (f"median norm grew {grown:.1f} decades since init "
                           f"({margin_words('growth', g_margin)}); " + row["evidence"])


def _add_context(row: dict[str, Any], facts: _RunFacts, lo: int, hi: int, steps: tuple[int, int]) -> None:
    """The numbers that explain a verdict (saturation, dead units, clipping, total norms) and
    the suggestion they lead to."""
    row["saturated_frac"] = window_mean(facts.matrices.get(M.ACT_SATURATED_FRAC), lo, hi)
    row["dead_frac"] = window_mean(facts.matrices.get(DEAD_METRIC), lo, hi)
    row.update(clip_stats(facts.series, facts.grad, *steps))
    row["total_norm_p10"], row["total_norm_p50"], row["total_norm_p90"] = facts.pcts
    row["suggestion"], row["reason"] = suggest(row, facts.traits, facts.meta, facts.thresholds)


def diagnose_runs(runs: Iterable[Any], *, thresholds: Thresholds = THRESHOLDS) -> pd.DataFrame:
    """:func:`diagnose_run` over several runs, concatenated (the ``run`` column tells them apart)."""
    frames = [diagnose_run(run, thresholds=thresholds) for run in runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)
