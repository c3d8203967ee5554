"""Where non-finite values first appeared: the first NaN/inf step of each layer, per run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.style import Section, base_layout, ptext

_SOURCES = (M.GRAD_NORM, M.ACT_GRAD_NORM, M.GRAD_NONFINITE)


def first_nonfinite(view: RunView) -> dict[str, tuple[int, int]]:
    """layer -> (first step with a non-finite value, depth), over the recorded layer metrics."""
    found: dict[str, tuple[int, int]] = {}
    for metric in _SOURCES:
        m = view.matrices.get(metric)
        if m is None:
            continue
        if metric == M.GRAD_NONFINITE:
            bad = m.present & np.isfinite(m.values) & (m.values > 0)
        else:
            bad = m.present & ~np.isfinite(m.values)
        rows = np.flatnonzero(bad.any(axis=1))
        for r in rows:
            step = int(m.steps[np.argmax(bad[r])])
            name = m.layers[r]
            if name not in found or step < found[name][0]:
                found[name] = (step, int(m.depths[r]))
    return found


def nonfinite_section(views: Sequence[RunView]) -> Section:
    """A step x depth map of the first non-finite value per layer; the run's first one starred."""
    section = Section("nonfinite", "Where non-finite values first appeared",
                      "For each layer, the first step at which its gradient held NaN or inf "
                      "(crosses), and the run's first non-finite value (star). The earliest, "
                      "lowest point is where the explosion started.")
    fig = go.Figure()
    drawn = False
    flagged = False  # a run whose meta names a non-finite step
    top = 0
    for view in views:
        found = first_nonfinite(view)
        star, unlocated = _first_point(view, found, section)
        flagged |= unlocated
        if not found and star is None:
            continue
        drawn = True
        names = list(found)
        top = max([top, *(d for _, d in found.values()), star[1] if star else 0])
        fig.add_trace(go.Scatter(
            x=[found[n][0] for n in names], y=[found[n][1] for n in names],
            customdata=[ptext(n) for n in names], mode="markers", name=ptext(view.label),
            legendgroup=view.label, marker=dict(symbol="x", size=8, color=view.colour),
            hovertemplate=(f"<b>{ptext(view.label)}</b><br>layer %{{customdata}}<br>depth %{{y}}"
                           "<br>first non-finite at step %{x}<extra></extra>"),
        ))
        if star is not None:
            fig.add_trace(go.Scatter(
                x=[star[0]], y=[star[1]], customdata=[ptext(star[2])], mode="markers",
                name=ptext(f"{view.label}: first"), legendgroup=view.label, showlegend=False,
                marker=dict(symbol="star", size=16, color=view.colour, line=dict(width=1, color="#000")),
                hovertemplate=(f"<b>{ptext(view.label)}</b>: first non-finite value<br>layer "
                               "%{customdata}<br>depth %{y}<br>step %{x}<extra></extra>"),
            ))
    if not drawn:
        if not flagged:
            section.notes.append(
                f"No non-finite value was recorded in {'the run' if len(views) == 1 else 'any of the runs'}.")
        return section
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="depth (0 = input)", range=[-1, top + 1])
    base_layout(fig, height=380)
    section.figure = fig
    return section


def _first_point(view: RunView, found: dict[str, tuple[int, int]],
                 section: Section) -> tuple[tuple[int, int, str] | None, bool]:
    """The run's first non-finite value as (step, depth, layer) to star, noted in ``section``;
    and whether the meta names one that no recorded step locates."""
    first = view.meta.get("nonfinite_first")
    if isinstance(first, dict) and first.get("step") is not None:
        layer = str(first.get("layer")) if first.get("layer") is not None else None
        depth = view.depth_of.get(layer) if layer else None
        note = f"{view.label}: first non-finite value at step {first.get('step')}"
        note += f" in layer {layer}." if layer else "."
        unlocated = not found and depth is None
        if unlocated:
            # The run checks every step, but records only some: the value fell between
            # recorded steps, so there is nothing to draw, yet something was non-finite.
            note += " No recorded step holds a non-finite value, so the layer is not located."
        section.notes.append(note)
        return ((int(first["step"]), depth, layer) if depth is not None and layer else None), unlocated
    if found:
        name, (step, depth) = min(found.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        section.notes.append(f"{view.label}: first non-finite value at step {step} in layer {name}.")
        return (step, depth, name), False
    return None, False
