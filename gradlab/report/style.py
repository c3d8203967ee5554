"""Shared look of every figure: run colours, escaping, number formats, sections and notes."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

#: Run colours, in the order runs are given; the same run has the same colour in every figure.
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#e6550d", "#7b4173", "#3182bd",
)

#: Colours of the two marked floors of a log scale.
UNDERFLOW_COLOUR = "#9e9e9e"
NONFINITE_COLOUR = "#ff00aa"

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def colour(i: int) -> str:
    """The colour of the i-th run."""
    return PALETTE[i % len(PALETTE)]


def ptext(value: Any) -> str:
    """Text for a plotly string (title, legend, hover, tick).

    plotly.js reads these as a small subset of HTML; escaping ``&``, ``<`` and ``>`` makes a
    name such as ``<b>x</b>`` show literally (plotly.js turns the entities back into
    characters when it draws the text).
    """
    # "%{" would start a plotly hover-template field (a run named "%{x}" would show a step
    # number); "&#37;" is drawn as "%" but is not a field.
    return html.escape(str(value), quote=False).replace("%{", "&#37;{")


def htext(value: Any) -> str:
    """Text for the page's own HTML (quotes escaped too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number for people: scientific outside [1e-3, 1e4), '0' for zero, words for NaN/inf."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e4:
        return f"{x:.{max(digits - 1, 0)}e}"
    return f"{x:.{digits}g}"


def value_text(x: float) -> str:
    """A recorded norm for hover text, with zeros and non-finite values named."""
    if x == 0:
        return "0.0 (underflow)"
    if not math.isfinite(x):
        return f"{x} (non-finite)"
    return f"{x:.4g}"


@dataclass
class Section:
    """One numbered part of the report: a figure (or none) with an intro and notes."""

    key: str  # id of the plot div: "fig-<key>"
    title: str
    intro: str  # one or two sentences: what to look for (plain text, escaped on output)
    figure: go.Figure | None = None
    notes: list[str] = field(default_factory=list)  # plain text, escaped on output
    number: str = ""  # figure number shown in the heading ("1a", "2", ...)


def base_layout(fig: go.Figure, *, height: int, legend: bool = True) -> go.Figure:
    """Common layout: white template, compact margins, legend on top, hover by point."""
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin=dict(l=70, r=30, t=60, b=50),
        font=dict(family=FONT, size=12),
        hoverlabel=dict(namelength=-1),
        showlegend=legend,
        legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="left", x=0),
    )
    return fig


def log_ticks(zmin: float, zmax: float, max_ticks: int = 9) -> list[int]:
    """Integer decades between zmin and zmax, thinned to at most ``max_ticks``."""
    lo, hi = math.ceil(zmin), math.floor(zmax)
    if hi < lo:
        return [round((zmin + zmax) / 2)]
    step = max(1, math.ceil((hi - lo + 1) / max_ticks))
    return list(range(lo, hi + 1, step))


def decade_label(k: int) -> str:
    """``1e-3`` style label of 10**k."""
    return "1" if k == 0 else f"1e{k}"
