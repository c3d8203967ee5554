"""Depth profiles: a metric against the aligned layer position, at chosen phases of training.

Each subplot holds every run (one colour each) at one phase, so plain and residual twins
can be read side by side. On log axes zeros are drawn on a dotted floor marked "underflow"
and NaN/inf on a ceiling marked "non-finite"; nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradlab.analysis.diagnose import PHASES, LayerMatrix, phase_windows, window_profile
from gradlab.common import metrics as M
from gradlab.report.align import axis_ticks, common_segments
from gradlab.report.data import RunView
from gradlab.report.style import Section, base_layout, ptext, value_text

PHASE_WORDS = {"init": "at initialisation", "early": "early (first tenth)", "late": "late (last tenth)"}


@dataclass
class _Line:
    view: RunView
    metric: str
    phase: str
    x: np.ndarray
    y: np.ndarray  # values; 0 = underflow, NaN = non-finite
    layers: list[str]
    depths: list[int]
    steps: str


def _lines(views: Sequence[RunView], metric: str, phases: Sequence[str],
           keep: Callable[[RunView, LayerMatrix], np.ndarray] | None) -> list[_Line]:
    out = []
    for view in views:
        m = view.matrices.get(metric)
        if m is None:
            continue
        mask = keep(view, m) if keep else np.ones(len(m.layers), dtype=bool)
        for phase, window in phase_windows(len(m.steps)).items():
            if phase not in phases:
                continue
            rows, values, nonfinite = window_profile(m, window)
            sel = mask[rows]
            rows, values, nonfinite = rows[sel], values[sel], nonfinite[sel]
            if not rows.size:
                continue
            values = np.where(nonfinite > 0, np.nan, values)
            a, b = int(m.steps[window.start]), int(m.steps[window.stop - 1])
            steps = f"step {a}" if a == b else f"median of steps {a}-{b}"
            layers = [m.layers[r] for r in rows]
            x = np.array([view.alignment.positions.get(n, np.nan) for n in layers])
            out.append(_Line(view, metric, phase, x, values, layers, [int(m.depths[r]) for r in rows], steps))
    return out


def profile_section(views: Sequence[RunView], metrics: Sequence[tuple[str, str]], *, key: str,
                    title: str, intro: str, phases: Sequence[str] = PHASES,
                    log_y: bool | None | dict[str, bool | None] = True,
                    keep: Callable[[RunView, LayerMatrix], np.ndarray] | None = None,
                    by_phase_columns: bool = True) -> Section:
    """Profiles of ``metrics`` ((name, axis title) pairs): rows = metrics, columns = phases.

    ``log_y`` True/False, or None to choose log when the values span more than two decades;
    or a dict of those per metric.
    With ``by_phase_columns`` False, the columns are the metrics and phases share a subplot
    (solid = last phase, dotted = first).
    """
    section = Section(key, title, intro)
    per_metric = {name: _lines(views, name, phases, keep) for name, _ in metrics}
    present = [(name, label) for name, label in metrics if per_metric[name]]
    absent = [name for name, _ in metrics if not per_metric[name]]
    if not present:
        section.notes.append(f"No run recorded {', '.join(absent)}: nothing to draw.")
        return section
    if absent:
        section.notes.append(f"Not recorded in any run: {', '.join(absent)}.")
    used = [p for p in phases if any(line.phase == p for ls in per_metric.values() for line in ls)]
    grid = _Grid(used, by_phase_columns)
    fig = grid.figure(present)
    segments = common_segments([v.alignment for v in views])
    shown_legend: set[str] = set()
    for mi, (name, label) in enumerate(present):
        lines = per_metric[name]
        scale = _scale(name, lines, log_y)
        for line in lines:
            _draw_line(fig, section, grid, mi, line, scale, shown_legend)
        for row, col in grid.cells(mi):
            _style_cell(fig, name, label, scale, segments, row, col)
    base_layout(fig, height=330 * grid.nrows(present) + 110)
    section.figure = fig
    return section


@dataclass
class _Grid:
    """Where a line goes: rows = metrics and columns = phases, or one row of metrics."""

    phases: list[str]
    by_phase_columns: bool

    def nrows(self, present: Sequence[tuple[str, str]]) -> int:
        return len(present) if self.by_phase_columns else 1

    def figure(self, present: Sequence[tuple[str, str]]) -> go.Figure:
        if self.by_phase_columns:
            ncols = len(self.phases)
            titles = [f"{ptext(label)}, {PHASE_WORDS[p]}" for _, label in present for p in self.phases]
        else:
            ncols = len(present)
            titles = [ptext(label) for _, label in present]
        nrows = self.nrows(present)
        return make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.06,
                             vertical_spacing=0.14 if nrows > 1 else 0.1)

    def place(self, mi: int, phase: str) -> tuple[int, int, str]:
        """(row, column, dash) of metric number ``mi`` at ``phase``."""
        if self.by_phase_columns:
            return mi + 1, self.phases.index(phase) + 1, "solid"
        return 1, mi + 1, "solid" if phase == self.phases[-1] else "dot"

    def cells(self, mi: int) -> list[tuple[int, int]]:
        """The (row, column) subplots of metric number ``mi``."""
        if self.by_phase_columns:
            return [(mi + 1, col) for col in range(1, len(self.phases) + 1)]
        return [(1, mi + 1)]


@dataclass
class _Scale:
    """A metric's y axis: log or linear, and the levels zeros and NaN/inf are drawn at."""

    log: bool
    floor: float | None  # underflow level (log axes only)
    ceiling: float | None  # non-finite level
    any_zero: bool  # a zero value to draw on the floor (log axes only)
    any_bad: bool  # a NaN/inf value to draw on the ceiling


def _scale(name: str, lines: Sequence[_Line], log_y: bool | None | dict[str, bool | None]) -> _Scale:
    values = np.concatenate([line.y for line in lines])
    pos = values[np.isfinite(values) & (values > 0)]
    use_log = log_y.get(name, True) if isinstance(log_y, dict) else log_y
    if use_log is None:
        use_log = bool(pos.size and pos.max() / pos.min() > 100)
    floor = ceiling = None
    if use_log and pos.size:
        floor = 10.0 ** (math.floor(math.log10(pos.min())) - 1)
        ceiling = 10.0 ** (math.ceil(math.log10(pos.max())) + 1)
    elif pos.size or values.size:
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 1.0
        ceiling = top * 1.15 if top > 0 else 1.0
    any_zero = any((line.y == 0).any() for line in lines) and use_log
    any_bad = any(np.isnan(line.y).any() for line in lines)
    return _Scale(use_log, floor, ceiling, any_zero, any_bad)


def _draw_line(fig: go.Figure, section: Section, grid: _Grid, mi: int, line: _Line, scale: _Scale,
               shown_legend: set[str]) -> None:
    """One run's profile at one phase, and its mean-field prediction where that applies."""
    row, col, dash = grid.place(mi, line.phase)
    _add_line(fig, line, row, col, dash, scale.floor if scale.log else None, scale.ceiling, shown_legend)
    if line.metric == M.ACT_GRAD_NORM and line.phase == "init" and scale.log:
        if _add_meanfield(fig, line, row, col):
            section.notes.append(
                f"{line.view.label}: dashed = the mean-field prediction at init "
                "(from the initial weights, anchored at the last layer).")


def _style_cell(fig: go.Figure, name: str, label: str, scale: _Scale, segments: list[tuple[str, float, float]],
                row: int, col: int) -> None:
    """Axes of one subplot, and the dotted underflow and non-finite bands where needed."""
    fig.update_yaxes(type="log" if scale.log else "linear", row=row, col=col,
                     title_text=ptext(label) if col == 1 else None, exponentformat="power")
    if name.endswith("_frac"):
        fig.update_yaxes(range=[-0.03, 1.03], row=row, col=col)
    fig.update_xaxes(row=row, col=col, **axis_ticks(segments))
    if scale.any_zero and scale.floor is not None:
        fig.add_hline(y=scale.floor, line=dict(color="#777", dash="dot", width=1), row=row, col=col)
        _band_label(fig, "underflow (0.0)", scale.floor, scale.log, "top", row, col)
    if scale.any_bad and scale.ceiling is not None:
        fig.add_hline(y=scale.ceiling, line=dict(color="#c0c", dash="dot", width=1), row=row, col=col)
        _band_label(fig, "non-finite", scale.ceiling, scale.log, "bottom", row, col)


def _band_label(fig: go.Figure, text: str, y: float, log_axis: bool, anchor: str, row: int, col: int) -> None:
    """Label a dotted band line at its right end. (plotly places add_hline's own annotation at
    the raw value even on a log axis, where annotations take log10 of it, so 1e-24 showed at 1.)"""
    fig.add_annotation(text=text, x=1, xref="x domain", xanchor="right", y=math.log10(y) if log_axis else y,
                       yanchor=anchor, showarrow=False, font=dict(size=10), row=row, col=col)


def meanfield_line(line: _Line) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's stored mean-field prediction on this line's axis, scaled so that it meets the
    measurement at the last predicted layer; ``None`` when the run has no prediction."""
    predicted = line.view.meta.get("meanfield")
    if not predicted:
        return None
    measured = dict(zip(line.layers, line.y, strict=True))
    x_of = dict(zip(line.layers, line.x, strict=True))
    rows = [p for p in predicted if p.get("layer") in x_of]
    anchor = next((p for p in reversed(rows)
                   if np.isfinite(measured[p["layer"]]) and measured[p["layer"]] > 0), None)
    if anchor is None or not anchor["pred_rel"] > 0:
        return None
    scale = measured[anchor["layer"]] / anchor["pred_rel"]
    x = np.array([x_of[p["layer"]] for p in rows], dtype=float)
    y = np.array([p["pred_rel"] * scale for p in rows], dtype=float)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _add_meanfield(fig: go.Figure, line: _Line, row: int, col: int) -> bool:
    curve = meanfield_line(line)
    if curve is None:
        return False
    fig.add_trace(go.Scatter(
        x=curve[0], y=curve[1], mode="lines", name=ptext(f"{line.view.label}: mean-field"),
        legendgroup=line.view.label, showlegend=False,
        line=dict(color=line.view.colour, width=1.5, dash="dash"),
        hovertemplate=f"<b>{ptext(line.view.label)}</b><br>mean-field prediction %{{y:.3g}}<extra></extra>",
    ), row=row, col=col)
    return True


def _add_line(fig: go.Figure, line: _Line, row: int, col: int, dash: str, floor: float | None,
              ceiling: float | None, shown_legend: set[str]) -> None:
    view = line.view
    finite = np.isfinite(line.y)
    zero = finite & (line.y == 0)
    normal = finite & ~(zero if floor is not None else np.zeros_like(zero))
    custom = np.array([[ptext(n), d, ptext(line.steps), ptext(value_text(v))]
                       for n, d, v in zip(line.layers, line.depths, line.y, strict=True)], dtype=object)
    hover = (f"<b>{ptext(view.label)}</b><br>%{{customdata[0]}}<br>depth %{{customdata[1]}}"
             f"<br>%{{customdata[2]}}<br>value %{{customdata[3]}}<extra></extra>")
    legend = view.label not in shown_legend
    shown_legend.add(view.label)
    order = np.argsort(line.x, kind="stable")
    idx = order[normal[order]]
    fig.add_trace(go.Scatter(
        x=line.x[idx], y=line.y[idx], customdata=custom[idx], mode="lines+markers",
        name=ptext(view.label), legendgroup=view.label, showlegend=legend,
        line=dict(color=view.colour, width=1.5, dash=dash), marker=dict(size=4, color=view.colour),
        hovertemplate=hover,
    ), row=row, col=col)
    for mask, level, symbol in ((zero, floor, "x-thin-open"), (~finite, ceiling, "star")):
        if level is None or not mask.any():
            continue
        fig.add_trace(go.Scatter(
            x=line.x[mask], y=np.full(int(mask.sum()), level), customdata=custom[mask],
            mode="markers", name=ptext(view.label), legendgroup=view.label, showlegend=False,
            marker=dict(symbol=symbol, size=8, color=view.colour, line=dict(width=1.5, color=view.colour)),
            hovertemplate=hover,
        ), row=row, col=col)
