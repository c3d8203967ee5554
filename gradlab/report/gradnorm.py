"""The total gradient norm over steps, with clipping and non-finite steps marked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.downsample import minmax_indices
from gradlab.report.style import Section, base_layout, ptext
from gradlab.report.training import series_trace

MAX_EVENTS = 1000


def _total(view: RunView) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The norm to draw: before clipping when the trainer logged it, else the recorder's."""
    for metric, what in ((M.CLIP_NORM_BEFORE, "total norm before clipping"),
                         (M.TOTAL_GRAD_NORM, M.label(M.TOTAL_GRAD_NORM))):
        if metric in view.series:
            return (*view.series[metric], what)
    m = view.matrices.get(M.GRAD_NORM)
    if m is None:
        return None
    sq = np.where(m.present & np.isfinite(m.values), m.values, 0.0) ** 2
    total = np.sqrt(sq.sum(axis=0))
    bad = (m.present & ~np.isfinite(m.values)).any(axis=0)
    total[bad] = np.nan
    return m.steps, total, "total norm (from per-layer norms)"


def _events(view: RunView, metric: str) -> np.ndarray:
    if metric not in view.series:
        return np.array([], dtype=np.int64)
    s, v = view.series[metric]
    return s[v > 0]


def _thin(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = minmax_indices(values, MAX_EVENTS)
    return steps[keep], values[keep]


def gradnorm_section(views: Sequence[RunView]) -> Section:
    """One log-scale plot: each run's total norm, its clip threshold, clip events and bad steps."""
    section = Section("gradnorm", "Total gradient norm and clipping",
                      "The global gradient norm per step on a log axis. Dashed: the clipping "
                      "threshold; circles: steps where clipping fired; crosses on the top edge: "
                      "steps whose gradient was non-finite or that were skipped.")
    totals = {v.label: _total(v) for v in views}
    if not any(totals.values()):
        section.notes.append("No run recorded a total or per-layer gradient norm: nothing to draw.")
        return section
    fig = go.Figure()
    all_vals = np.concatenate([t[1][np.isfinite(t[1]) & (t[1] > 0)] for t in totals.values() if t])
    top = 10 ** (np.ceil(np.log10(all_vals.max())) + 0.5) if all_vals.size else 1.0
    bad_any = False
    for view in views:
        total = totals[view.label]
        if total is None:
            section.notes.append(f"{view.label}: no gradient norm recorded.")
            continue
        bad_any |= _draw_run(fig, section, view, *total, top)
    if bad_any:
        fig.add_hline(y=top, line=dict(color="#c0c", dash="dot", width=1),
                      annotation_text="non-finite / skipped", annotation_position="top left",
                      annotation_font_size=10)
    fig.update_yaxes(type="log", title_text=M.label(M.TOTAL_GRAD_NORM), exponentformat="power")
    fig.update_xaxes(title_text="step")
    base_layout(fig, height=420)
    section.figure = fig
    return section


def _draw_run(fig: go.Figure, section: Section, view: RunView, steps: np.ndarray, values: np.ndarray,
              what: str, top: float) -> bool:
    """One run's norm, threshold, clip events and bad steps; True when it had bad steps."""
    pos = values.copy()
    pos[pos <= 0] = np.nan  # a zero total norm cannot sit on the log axis; counted below
    fig.add_trace(series_trace(view, steps, pos, name=view.label, dash="solid", what=what,
                               show_legend=True))
    zeros = int((values == 0).sum())
    if zeros:
        section.notes.append(f"{view.label}: {zeros} steps with a total norm of exactly 0.0 (underflow).")
    if M.CLIP_THRESHOLD in view.series:
        ts, tv = view.series[M.CLIP_THRESHOLD]
        ok = np.isfinite(tv) & (tv > 0)
        if ok.any():
            fig.add_trace(series_trace(view, ts[ok], tv[ok], name=f"{view.label} threshold",
                                       dash="dash", what="clip threshold", show_legend=False))
    _add_clip_events(fig, section, view, steps, values)
    return _add_bad_steps(fig, section, view, steps, values, top)


def _add_clip_events(fig: go.Figure, section: Section, view: RunView, steps: np.ndarray,
                     values: np.ndarray) -> None:
    """Circles at the steps where clipping fired, at the norm before clipping."""
    fired = _events(view, M.CLIP_FIRED)
    if not fired.size:
        return
    at = np.interp(fired, steps, np.nan_to_num(values, nan=0.0, posinf=0.0))
    if M.CLIP_NORM_BEFORE in view.series:
        bs, bv = view.series[M.CLIP_NORM_BEFORE]
        at = bv[np.searchsorted(bs, fired).clip(0, len(bs) - 1)]
    fs, fv = _thin(fired, at)
    fig.add_trace(go.Scatter(
        x=fs, y=fv, mode="markers", name=ptext(f"{view.label} clipped"), legendgroup=view.label,
        showlegend=False, marker=dict(symbol="circle-open", size=7, color=view.colour),
        hovertemplate=(f"<b>{ptext(view.label)}</b><br>clipping fired at step %{{x}}<br>"
                       "norm before %{y:.4g}<extra></extra>"),
    ))
    section.notes.append(f"{view.label}: clipping fired on {fired.size} steps.")


def _add_bad_steps(fig: go.Figure, section: Section, view: RunView, steps: np.ndarray,
                   values: np.ndarray, top: float) -> bool:
    """Crosses on the top edge at non-finite or skipped steps; True when there were any."""
    bad = np.union1d(_events(view, M.NONFINITE), _events(view, M.SKIPPED))
    nonfinite_norm = steps[~np.isfinite(values)]
    bad = np.union1d(bad, nonfinite_norm)
    if not bad.size:
        return False
    shown = bad[minmax_indices(bad.astype(float), MAX_EVENTS)]
    fig.add_trace(go.Scatter(
        x=shown, y=np.full(shown.size, top), mode="markers",
        name=ptext(f"{view.label} non-finite/skipped"), legendgroup=view.label, showlegend=False,
        marker=dict(symbol="x", size=9, color=view.colour),
        hovertemplate=(f"<b>{ptext(view.label)}</b><br>step %{{x}}: non-finite gradient "
                       "or skipped update<extra></extra>"),
    ))
    section.notes.append(f"{view.label}: {bad.size} non-finite or skipped steps "
                         f"(first at step {int(bad[0])}).")
    return True
