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

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.errors import GradlabError

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
]


@dataclass(frozen=True)
class Thresholds:
    """The numbers behind every verdict and suggestion (see the module docstring)."""

    ratio_decades: float = 3.0  # last-to-first change of 1000x or more is vanishing/exploding
    slope_decades_per_layer: float = 0.1  # fitted change per weight layer that counts as a trend
    slope_min_layers: int = 6  # ... but only over at least this many layer positions
    slope_min_decades: float = 1.0  # ... and only when the fitted trend adds up to 10x or more
    growth_since_init_decades: float = 3.0  # median norm grown 1000x since init: exploding
    borderline_band: float = 0.25  # within +-25% of a threshold the call is "borderline", not a flip
    saturated_frac: float = 0.2  # mean saturated fraction that explains a decay
    dead_frac: float = 0.2  # mean fraction of dead ReLU units (0 for every example) that explains a decay
    clip_percentiles: tuple[float, float, float] = (10.0, 50.0, 90.0)  # of the total norm


#: The thresholds in use; documented in the README ("Diagnosis").
THRESHOLDS = Thresholds()

#: Phases of training, each a window of recorded steps (see :func:`phase_windows`).
PHASES = ("init", "early", "late")

#: The depth profiles that get a verdict: weight gradients and back-propagated dL/dh.
PROFILE_METRICS = ("grad_norm", "act_grad_norm")

#: Verdicts from the most to the least severe.
VERDICTS = ("non-finite", "exploding", "vanishing", "collapsed", "borderline", "healthy", "no-data")

#: Dead ReLU units: the fraction of a layer's units that output 0 for every example of the
#: batch. (The fraction of zero outputs, ``act_zero_frac``, is about 1/2 for any ReLU layer
#: and says nothing about dead units.)
DEAD_METRIC = "act_dead_units"

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


# ---------------------------------------------------------------------------------------------
# tables as grids
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerMatrix:
    """One layer metric of one run as a grid: layers (input to output) x recorded steps."""

    metric: str
    layers: list[str]  # sorted by depth
    depths: np.ndarray  # int64, one per layer
    steps: np.ndarray  # int64, sorted recorded steps
    values: np.ndarray  # float64 (n_layers, n_steps); NaN where not recorded (see present)
    present: np.ndarray  # bool (n_layers, n_steps): a value was recorded there

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their labels, cheap for categorical columns (the store's)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), [str(c) for c in column.cat.categories]
    codes, uniques = pd.factorize(column, sort=False)
    return codes, [str(u) for u in uniques]


def layer_matrices(layers: pd.DataFrame, metrics: Iterable[str] | None = None) -> dict[str, LayerMatrix]:
    """Grids of the long per-layer table, one per metric (only metrics that have rows).

    Linear in the number of rows: codes and scatter assignment, no pivot. A (layer, step) pair
    recorded twice keeps the later row.
    """
    needed = {"step", "layer", "depth", "metric", "value"}
    if layers is None or len(layers) == 0 or not needed <= set(layers.columns):
        return {}
    metric_codes, metric_names = _codes(layers["metric"])
    layer_codes, layer_names = _codes(layers["layer"])
    step_all = layers["step"].to_numpy().astype(np.int64, copy=False)
    depth_all = layers["depth"].to_numpy()
    value_all = layers["value"].to_numpy(dtype=np.float64)
    wanted = set(metrics) if metrics is not None else None
    out: dict[str, LayerMatrix] = {}
    for k, name in enumerate(metric_names):
        if wanted is not None and name not in wanted:
            continue
        idx = np.flatnonzero(metric_codes == k)
        if idx.size == 0:
            continue
        lc = layer_codes[idx]
        used = np.flatnonzero(np.bincount(lc, minlength=len(layer_names)))
        local = np.full(len(layer_names), -1, dtype=np.int64)
        local[used] = np.arange(used.size)
        li = local[lc]
        depth_of = np.zeros(used.size, dtype=np.int64)
        depth_of[li] = depth_all[idx]
        steps = step_all[idx]
        if steps.size > 1 and np.all(steps[1:] >= steps[:-1]):
            new = np.empty(steps.size, dtype=bool)
            new[0] = True
            np.not_equal(steps[1:], steps[:-1], out=new[1:])
            uniq = steps[new]
            si = np.cumsum(new) - 1
        else:
            uniq, si = np.unique(steps, return_inverse=True)
        names = [layer_names[c] for c in used]
        order = np.lexsort((np.array(names, dtype=object).astype(str), depth_of))
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        rows = rank[li]
        values = np.full((used.size, uniq.size), np.nan)
        present = np.zeros((used.size, uniq.size), dtype=bool)
        values[rows, si] = value_all[idx]
        present[rows, si] = True
        out[name] = LayerMatrix(name, [names[i] for i in order], depth_of[order], uniq.astype(np.int64),
                                values, present)
    return out


def step_series(steps: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The long per-step table as ``metric -> (steps, values)``, each sorted by step."""
    if steps is None or len(steps) == 0 or not {"step", "metric", "value"} <= set(steps.columns):
        return {}
    codes, names = _codes(steps["metric"])
    s = steps["step"].to_numpy().astype(np.int64, copy=False)
    v = steps["value"].to_numpy(dtype=np.float64)
    out = {}
    for k, name in enumerate(names):
        idx = np.flatnonzero(codes == k)
        if idx.size:
            order = np.argsort(s[idx], kind="stable")
            out[name] = (s[idx][order], v[idx][order])
    return out


# ---------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------
def phase_windows(n_steps: int) -> dict[str, slice]:
    """Which recorded steps (by index) make up each phase of training.

    ``init`` is the first recorded step alone; ``late`` the last tenth of the recorded steps
    (at least one); ``early`` the first tenth after init (at least one), when it does not
    reach into ``late``. One recorded step gives ``init`` only; two give ``init`` and ``late``.
    """
    if n_steps <= 0:
        return {}
    windows = {"init": slice(0, 1)}
    if n_steps == 1:
        return windows
    tenth = max(1, int(np.ceil(n_steps / 10)))
    late_start = max(1, n_steps - tenth)
    early_stop = min(1 + tenth, late_start)
    if early_stop > 1:
        windows["early"] = slice(1, early_stop)
    windows["late"] = slice(late_start, n_steps)
    return {p: windows[p] for p in PHASES if p in windows}


def window_profile(matrix: LayerMatrix, window: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phase's depth profile: (row indices, per-layer value, non-finite count per layer).

    A layer's value is the median of its finite recorded values in the window (the raw value
    for a one-step window); NaN when every value it recorded there was non-finite. Layers that
    recorded nothing in the window are left out.
    """
    values = matrix.values[:, window]
    present = matrix.present[:, window]
    finite = present & np.isfinite(values)
    nonfinite = (present & ~finite).sum(axis=1)
    rows = np.flatnonzero(present.any(axis=1))
    if values.shape[1] == 1:
        med = np.where(finite[:, 0], values[:, 0], np.nan)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN is the answer
            med = np.nanmedian(np.where(finite, values, np.nan), axis=1)
    return rows, med[rows], nonfinite[rows]


# ---------------------------------------------------------------------------------------------
# what the run's meta says about the network
# ---------------------------------------------------------------------------------------------
_WEIGHT_TYPE = re.compile(r"conv|linear", re.IGNORECASE)
_NORM_TYPE = re.compile(r"norm", re.IGNORECASE)
_SATURATING_TYPE = re.compile(r"sigmoid|tanh|hardtanh|softsign", re.IGNORECASE)
# attention modules: torch's MultiheadAttention, Hugging Face's GPT2Attention, BertSelfAttention, ...
_ATTENTION_TYPE = re.compile(r"attention", re.IGNORECASE)


def _meta_layers(meta: dict[str, Any]) -> list[dict[str, Any]]:
    layers = meta.get("layers")
    if not isinstance(layers, list):
        return []
    return [entry for entry in layers if isinstance(entry, dict) and "name" in entry]


def layer_positions(names: Sequence[str], depths: Sequence[int], meta: dict[str, Any],
                    weight_layers: Sequence[int] | None = None) -> np.ndarray:
    """Each layer's position in weight layers from the input (see the module docstring).

    ``weight_layers`` are depths of layers with weight gradients, used when the meta has no
    layer types.
    """
    depths = np.asarray(depths, dtype=np.int64)
    typed = [e for e in _meta_layers(meta) if isinstance(e.get("type"), str) and "depth" in e]
    weight_depths: np.ndarray | None = None
    if typed:
        found = [int(e["depth"]) for e in typed if _WEIGHT_TYPE.search(e["type"])]
        if found:
            weight_depths = np.unique(np.asarray(found, dtype=np.int64))
    if weight_depths is None and weight_layers is not None and len(weight_layers):
        weight_depths = np.unique(np.asarray(weight_layers, dtype=np.int64))
    if weight_depths is None:
        return np.unique(depths, return_inverse=True)[1].astype(float)
    return np.clip(np.searchsorted(weight_depths, depths, side="right") - 1, 0, None).astype(float)


_SPEC_NAME = re.compile(r"^(?:tv:)?([a-z_]+?)(\d*)$")


def model_traits(meta: dict[str, Any]) -> dict[str, Any]:
    """What the network is made of, from layer types in the meta or else its model spec.

    Keys: ``saturating`` (sigmoid/tanh present), ``normalised`` (a norm layer present),
    ``residual`` (skip connections), ``act`` and ``init``; each None when unknown.
    """
    spec = str(meta.get("model") or (meta.get("spec") or {}).get("model") or "")
    text = spec.strip().lower()
    name, options = text, {}
    if text.startswith("tv:"):
        name = "tv:" + text[3:].partition(":")[0]
    else:
        name, _, rest = text.partition(":")
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if eq:
                options[key.strip()] = value.strip()
    base = name.removeprefix("tv:")
    match = _SPEC_NAME.match(base)
    family = match.group(1) if match else base
    known = family in ("resnet", "plain", "mlp", "wide_resnet", "resnext")
    traits: dict[str, Any] = {"saturating": None, "normalised": None, "residual": None,
                              "act": None, "init": None}
    if known:
        traits["act"] = options.get("act", "relu")
        traits["init"] = options.get("init", "default")
        traits["normalised"] = options.get("norm", "batch") != "none"
        traits["saturating"] = traits["act"] in ("sigmoid", "tanh")
        traits["residual"] = family != "plain" and family != "mlp"
    types = [str(e.get("type")) for e in _meta_layers(meta) if e.get("type")]
    types += [str(t) for t in (meta.get("module_types") or {})]  # recorder runs: every module's type
    if types:
        traits["normalised"] = any(_NORM_TYPE.search(t) for t in types)  # LayerNorm and RMSNorm too
        traits["saturating"] = any(_SATURATING_TYPE.search(t) for t in types)
        if any(_ATTENTION_TYPE.search(t) for t in types):
            # a transformer: its blocks add each sublayer to a residual stream
            traits["residual"] = True
            traits["attention"] = True
    return traits


# ---------------------------------------------------------------------------------------------
# one profile
# ---------------------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if not np.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits + 1}g}"


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
    out: dict[str, Any] = {
        "verdict": "no-data", "n_layers": int(len(v)), "first_layer": None, "last_layer": None,
        "first_norm": np.nan, "last_norm": np.nan, "first_to_last_ratio": np.nan,
        "decades_lost": np.nan, "decades_per_layer": np.nan, "fit_layers": 0, "n_zero": 0,
        "underflow": False, "n_nonfinite": 0, "margin": np.nan, "leaning": None,
        "evidence": "no layer recorded this metric",
    }
    if len(v) == 0:
        return out
    finite = np.isfinite(v)
    zero = finite & (v == 0.0)
    positive = finite & (v > 0.0)
    n_zero, n_nonfinite = int(zero.sum()), int((~finite).sum())
    out.update(first_layer=names[0], last_layer=names[-1], first_norm=float(v[0]),
               last_norm=float(v[-1]), n_zero=n_zero, n_nonfinite=n_nonfinite,
               underflow=bool(n_zero))
    if finite[0] and finite[-1]:
        if v[-1] > 0:
            out["first_to_last_ratio"] = float(v[0] / v[-1])
        elif v[0] > 0:
            out["first_to_last_ratio"] = float("inf")
    logs = np.log10(v[positive])
    if positive.sum() >= 2:
        out["decades_lost"] = float(logs[-1] - logs[0])
        if np.ptp(d[positive]) > 0:
            slope = float(np.polyfit(d[positive], logs, 1)[0])
            out["decades_per_layer"] = slope + 0.0  # no negative zero
            out["fit_layers"] = int(len(np.unique(d[positive])))
    # Underflow on the input side: a zero at or below the median position.
    input_side = d <= np.median(d)
    underflow_at_input = bool((zero & input_side).any()) or (n_zero > 0 and not positive.any())

    slope = out["decades_per_layer"]
    span = float(np.ptp(d[positive])) if positive.any() else 0.0
    trend = slope * span if np.isfinite(slope) else 0.0
    long_enough = out["fit_layers"] >= thresholds.slope_min_layers
    lost = out["decades_lost"]
    evidence = _evidence_words(out, trend)
    # Each rule's strength: how far its quantity reaches relative to its threshold (1.0 is
    # the threshold itself), signed + toward vanishing and - toward exploding.
    strengths = {}
    if np.isfinite(lost):
        strengths["first-to-last"] = lost / thresholds.ratio_decades
    if long_enough and np.isfinite(slope) and slope * trend > 0:
        strengths["fitted slope"] = float(np.sign(slope)) * min(
            abs(slope) / thresholds.slope_decades_per_layer, abs(trend) / thresholds.slope_min_decades)
    out["margin"], out["leaning"] = np.nan, None
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
        verdict = _banded_verdict(abs(strength) - 1.0, out["leaning"], thresholds)
        evidence += f"; {_margin_words(rule, out['margin'])}"
    else:
        verdict = "healthy"
    out["verdict"] = verdict
    out["evidence"] = evidence
    return out


def _banded_verdict(margin: float, leaning: str | None, thresholds: Thresholds) -> str:
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


def _margin_words(rule: str, margin: float) -> str:
    if not np.isfinite(margin):
        return ""
    side = "past" if margin >= 0 else "short of"
    return f"{rule} rule {abs(margin):.0%} {side} its threshold"


def _evidence_words(p: dict[str, Any], trend: float) -> str:
    parts = [f"first/last = {_fmt(p['first_to_last_ratio'])}"]
    if np.isfinite(p["decades_lost"]):
        parts.append(f"{p['decades_lost']:+.1f} decades lost toward the input")
    if np.isfinite(p["decades_per_layer"]):
        parts.append(f"fit {p['decades_per_layer']:+.3f} decades/layer over {p['fit_layers']} "
                     f"positions ({trend:+.1f} decades)")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------
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
        matrices = layer_matrices(run.layers, (*PROFILE_METRICS, "act_saturated_frac", DEAD_METRIC))
    series = step_series(run.steps)
    traits = model_traits(meta)
    totals = _total_norms(series, matrices.get("grad_norm"))
    pcts = _percentiles(totals[1], thresholds) if totals is not None else (np.nan,) * 3
    no_params = {str(e["name"]) for e in _meta_layers(meta)
                 if isinstance(e.get("num_params"), (int, float)) and e["num_params"] == 0}
    grad = matrices.get("grad_norm")
    weight_layers = grad.depths if grad is not None else None
    rows: list[dict[str, Any]] = []
    for metric in PROFILE_METRICS:
        m = matrices.get(metric)
        if m is None:
            continue
        keep = np.ones(len(m.layers), dtype=bool)
        if metric == "grad_norm" and no_params:
            keep = np.array([name not in no_params for name in m.layers])
        positions = layer_positions(m.layers, m.depths, meta, weight_layers)
        init_logs: dict[int, float] | None = None
        windows = phase_windows(len(m.steps))
        events = _event_windows(m.steps, windows)
        for phase, window in windows.items():
            idx, values, nonfinite = window_profile(m, window)
            sel = keep[idx]
            idx, values, nonfinite = idx[sel], values[sel], nonfinite[sel]
            prof = diagnose_profile(positions[idx], values, layers=[m.layers[i] for i in idx],
                                    thresholds=thresholds)
            prof["n_nonfinite"] = int(max(prof["n_nonfinite"], int((nonfinite > 0).sum())))
            lo = int(m.steps[window.start])
            hi = int(m.steps[window.stop - 1])
            step_lo, step_hi = events[phase]
            row: dict[str, Any] = {"run": run.name, "metric": metric, "phase": phase,
                                   "step_from": lo, "step_to": hi, **prof}
            bad_steps = _count_events(series, ("nonfinite", "skipped"), step_lo, step_hi)
            row["nonfinite_steps"] = bad_steps
            if (prof["n_nonfinite"] or bad_steps) and prof["verdict"] != "non-finite":
                row["verdict"] = "non-finite"
                row["evidence"] = (f"{prof['n_nonfinite']} layers with NaN/inf and {bad_steps} "
                                   f"non-finite or skipped steps in this phase; " + prof["evidence"])
            if phase == "init":
                init_logs = _layer_logs(idx, values)
                row["growth_since_init"] = 0.0
            else:
                growth = _growth(init_logs, _layer_logs(idx, values))
                row["growth_since_init"] = float(growth)
                if np.isfinite(growth) and row["verdict"] in ("healthy", "borderline", "vanishing"):
                    g_margin = growth / thresholds.growth_since_init_decades - 1.0
                    g_verdict = _banded_verdict(g_margin, "exploding", thresholds)
                    if g_verdict == "exploding" or (g_verdict == "borderline" and row["verdict"] == "healthy"):
                        row["verdict"], row["leaning"], row["margin"] = g_verdict, "exploding", g_margin
                        row["evidence"] = (f"median norm grew {growth:.1f} decades since init "
                                           f"({_margin_words('growth', g_margin)}); " + row["evidence"])
            if phase == list(windows)[-1]:
                _mark_nonfinite_run(row, meta)
            row["saturated_frac"] = _window_mean(matrices.get("act_saturated_frac"), lo, hi)
            row["dead_frac"] = _window_mean(matrices.get(DEAD_METRIC), lo, hi)
            row.update(_clip_stats(series, grad, step_lo, step_hi))
            row["total_norm_p10"], row["total_norm_p50"], row["total_norm_p90"] = pcts
            row["suggestion"], row["reason"] = _suggest(row, traits, meta, thresholds)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame


def run_had_nonfinite(meta: dict[str, Any]) -> bool:
    """Whether the run's meta says a step was non-finite (stopped on, or skipped)."""
    counts = [meta.get("nonfinite_steps"), meta.get("skipped_steps")]
    if any(isinstance(c, (int, float)) and c > 0 for c in counts):
        return True
    return isinstance(meta.get("nonfinite_first"), dict) and meta["nonfinite_first"].get("step") is not None


def _mark_nonfinite_run(row: dict[str, Any], meta: dict[str, Any]) -> None:
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


def diagnose_runs(runs: Iterable[Any], *, thresholds: Thresholds = THRESHOLDS) -> pd.DataFrame:
    """:func:`diagnose_run` over several runs, concatenated (the ``run`` column tells them apart)."""
    frames = [diagnose_run(run, thresholds=thresholds) for run in runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _event_windows(steps: np.ndarray, windows: dict[str, slice]) -> dict[str, tuple[int, int]]:
    """Step ranges for counting events (non-finite/skipped steps, clipping) per phase.

    Unlike the profiles, these cover every step: init is its own step, early runs up to its
    last recorded step, and late takes every step after that, so no event falls between phases.
    """
    out: dict[str, tuple[int, int]] = {}
    first = int(steps[0])
    out["init"] = (first, first)
    end = first
    if "early" in windows:
        end = int(steps[windows["early"].stop - 1])
        out["early"] = (first + 1, end)
    if "late" in windows:
        out["late"] = (end + 1, int(np.iinfo(np.int64).max))
    # The last phase takes every later step, so a run that stopped on a non-finite step
    # between two recorded steps still counts it.
    last = list(out)[-1]
    out[last] = (out[last][0], int(np.iinfo(np.int64).max))
    return out


def _layer_logs(idx: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """log10 of each layer's positive, finite value, by row index."""
    ok = np.isfinite(values) & (values > 0)
    return dict(zip(idx[ok].tolist(), np.log10(values[ok]).tolist()))


def _growth(init_logs: dict[int, float] | None, logs: dict[int, float]) -> float:
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


def _window_mean(m: LayerMatrix | None, lo: int, hi: int) -> float:
    """Mean over layers and the steps lo..hi of a fraction metric (NaN when absent)."""
    if m is None:
        return np.nan
    cols = (m.steps >= lo) & (m.steps <= hi)
    if not cols.any():
        return np.nan
    vals = m.values[:, cols][m.present[:, cols]]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else np.nan


def _count_events(series: dict, metrics: Sequence[str], lo: int, hi: int) -> int:
    steps: set[int] = set()
    for name in metrics:
        if name in series:
            s, v = series[name]
            mask = (s >= lo) & (s <= hi) & (v != 0)
            steps.update(int(x) for x in s[mask])
    return len(steps)


def _total_norms(series: dict, grad: LayerMatrix | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The total gradient norm per step: before clipping when known, else the recorder's,
    else the root of the sum of squared per-layer norms."""
    for name in ("clip_norm_before", "total_grad_norm"):
        if name in series:
            return series[name]
    if grad is None:
        return None
    sq = np.where(grad.present, grad.values, 0.0) ** 2
    return grad.steps, np.sqrt(sq.sum(axis=0))


def _percentiles(values: np.ndarray, thresholds: Thresholds) -> tuple[float, float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (np.nan, np.nan, np.nan)
    return tuple(float(x) for x in np.percentile(finite, thresholds.clip_percentiles))  # type: ignore[return-value]


def _clip_stats(series: dict, grad: LayerMatrix | None, lo: int, hi: int) -> dict[str, Any]:
    """How often clipping fired between steps lo..hi, and which layers held the norm then."""
    out: dict[str, Any] = {"clip_fired": np.nan, "clip_rate": np.nan, "clip_top_layers": ""}
    if "clip_fired" not in series:
        return out
    s, v = series["clip_fired"]
    mask = (s >= lo) & (s <= hi)
    if not mask.any():
        return out
    fired = s[mask][v[mask] > 0]
    out["clip_fired"] = int(fired.size)
    out["clip_rate"] = float(fired.size / mask.sum())
    if grad is None or not fired.size:
        return out
    cols = np.isin(grad.steps, fired)
    if not cols.any():
        return out
    vals = np.where(grad.present[:, cols] & np.isfinite(grad.values[:, cols]), grad.values[:, cols], 0.0)
    sq = vals ** 2
    total = sq.sum(axis=0)
    ok = total > 0
    if not ok.any():
        return out
    share = (sq[:, ok] / total[ok]).mean(axis=1)
    top = np.argsort(share)[::-1][:3]
    out["clip_top_layers"] = ", ".join(f"{grad.layers[i]} {share[i]:.0%}" for i in top if share[i] > 0)
    return out


# ---------------------------------------------------------------------------------------------
# suggestions
# ---------------------------------------------------------------------------------------------
def _suggest(row: dict[str, Any], traits: dict[str, Any], meta: dict[str, Any],
             t: Thresholds) -> tuple[str, str]:
    """A change to try and the reason, tied to the row's evidence."""
    verdict = row["verdict"]
    sat, dead = row.get("saturated_frac"), row.get("dead_frac")
    p10, p50, p90 = row["total_norm_p10"], row["total_norm_p50"], row["total_norm_p90"]
    clip_text = ""
    if np.isfinite(p50):
        clip_text = (f"clip the total gradient norm at about {_fmt(p50)} (--clip norm:{p50:.3g})")
        clip_why = (f"observed total norms: p10 {_fmt(p10)}, median {_fmt(p50)}, p90 {_fmt(p90)}; "
                    "a threshold near the median (0.5-10x the average norm works) cuts spikes only")
    items: list[str] = []
    whys: list[str] = []
    if verdict == "healthy":
        if row.get("clip_rate", 0) and np.isfinite(row["clip_rate"]) and row["clip_rate"] > 0.5 and clip_text:
            return (f"raise the clipping threshold: it fired on {row['clip_rate']:.0%} of steps",
                    f"clipping on most steps rescales every update; {clip_why}")
        return "none needed", "the norm stays within the thresholds across depth"
    if verdict == "vanishing":
        if traits.get("saturating") or (np.isfinite(sat) and sat >= t.saturated_frac):
            items.append("use ReLU instead of sigmoid/tanh (or add BatchNorm before them)")
            why = ("sigmoid's slope is at most 0.25, so each such layer shrinks the backward signal 4x "
                   "(0.6 decades) or more")
            if np.isfinite(sat):
                why += f"; {sat:.0%} of units are saturated"
            whys.append(why)
        if traits.get("normalised") is False:
            items.append("add BatchNorm after each convolution / hidden linear layer")
            whys.append("there is no normalisation layer, so the signal's scale changes by the "
                        "same factor at every layer; with BN the backward norms stay healthy")
        if traits.get("residual") is False:
            items.append("add residual (skip) connections")
            whys.append("a plain stack multiplies the per-layer factors; a skip path carries the "
                        "gradient past each block unchanged")
        if (traits.get("act") in ("relu", "leaky_relu") and traits.get("normalised") is False
                and traits.get("init") in ("default", "xavier_uniform", "xavier_normal")):
            items.append("He (Kaiming) initialisation, std = sqrt(2 / fan_in)")
            whys.append("PyTorch's default and Xavier init give ReLU layers too small a gain "
                        "(variance factor below 1 per layer); He init keeps it at 1")
        if np.isfinite(dead) and dead >= t.dead_frac:
            items.append("lower the learning rate or use He initialisation")
            whys.append(f"{dead:.0%} of ReLU units are dead (0 for every example of the batch), "
                        "which cuts their gradient")
        if not items and traits.get("attention"):
            items.append("normalise the input of each sublayer (pre-LayerNorm), warm the learning rate up, "
                         "or initialise the residual branches' output projections smaller")
            whys.append("a transformer already has a residual stream and LayerNorm; what keeps its backward "
                        "signal is where the norms sit and how large the branches start")
        if not items:
            items.append("add residual connections or BatchNorm")
            whys.append("both keep the backward signal's scale from layer to layer")
    elif verdict == "exploding":
        if clip_text:
            items.append(clip_text)
            whys.append(clip_why)
        if row.get("clip_top_layers"):
            whys.append(f"layers holding the norm when clipping fired: {row['clip_top_layers']}")
        if traits.get("normalised") is False:
            items.append("add BatchNorm")
            whys.append("without normalisation the per-layer gain compounds with depth")
        items.append("lower the learning rate")
        whys.append("growth toward the input or over time is amplified by large steps")
    elif verdict == "non-finite":
        first = meta.get("nonfinite_first")
        where = ""
        if isinstance(first, dict) and first.get("step") is not None:
            layer = first.get("layer")
            where = (f"non-finite values first appeared at step {first.get('step')}"
                     + (f" in {layer}" if layer is not None else "") + "; ")
        if clip_text:
            items.append(clip_text)
        items.append("lower the learning rate")
        spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
        if spec.get("amp") == "fp16":
            items.append("train in bf16 or keep a GradScaler (fp16 overflows above 65504)")
        whys.append(where + (clip_why if clip_text else "a NaN or inf reached the weights' gradients"))
    return "; ".join(items), "; ".join(whys)


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------
_METRIC_WORDS = {"grad_norm": "weight grads", "act_grad_norm": "dL/dh"}


def format_diagnosis(df: pd.DataFrame) -> str:
    """The diagnosis as plain text, one block per run (what ``gradlab probe`` prints).

    One line per (metric, phase) with the verdict and its numbers, then each distinct
    suggestion for a non-healthy row once, with its reason.
    """
    if df is None or len(df) == 0:
        return "diagnosis: nothing to diagnose (no grad_norm or act_grad_norm recorded)"
    lines: list[str] = []
    for run, block in df.groupby("run", sort=False):
        lines.append(f"diagnosis of {run}:")
        advice: dict[str, str] = {}
        for row in block.itertuples(index=False):
            steps = (f"step {row.step_from}" if row.step_from == row.step_to
                     else f"steps {row.step_from}-{row.step_to}")
            dpl = (f"{row.decades_per_layer:+.3f} decades/layer lost toward the input"
                   if np.isfinite(row.decades_per_layer) else "no fit")
            extra = f", {row.n_zero} underflow (0.0)" if row.n_zero else ""
            if row.n_nonfinite:
                extra += f", {row.n_nonfinite} non-finite"
            margin = getattr(row, "margin", np.nan)
            if isinstance(margin, float) and np.isfinite(margin) and row.verdict != "non-finite":
                side = "past" if margin >= 0 else "short of"
                extra += f", {abs(margin):.0%} {side} the {getattr(row, 'leaning', None) or 'verdict'} threshold"
            lines.append(f"  {_METRIC_WORDS.get(row.metric, row.metric):<12} {row.phase:<5} "
                         f"{row.verdict.upper():<10} first/last {_fmt(row.first_to_last_ratio)}, "
                         f"{dpl}, {row.n_layers} layers{extra} ({steps})")
            if row.verdict not in ("healthy", "no-data") and row.suggestion:
                advice.setdefault(row.suggestion, row.reason)
        for suggestion, reason in advice.items():
            lines.append(f"  try: {suggestion}")
            lines.append(f"       because {reason}")
    return "\n".join(lines)


def thresholds_dict(thresholds: Thresholds = THRESHOLDS) -> dict[str, Any]:
    """The thresholds as a plain dict (for reports and the README)."""
    return asdict(thresholds)
