"""Training and evaluation curves: loss and accuracy against the step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.downsample import minmax_indices
from gradlab.report.style import Section, base_layout, ptext

MAX_POINTS = 2000

_PANELS = (
    ("loss", ((M.LOSS, "train", "solid"), (M.EVAL_LOSS, "eval", "dash"))),
    ("accuracy", ((M.TRAIN_ACC, "train", "solid"), (M.EVAL_ACC, "eval", "dash"))),
)


def series_trace(view: RunView, steps: np.ndarray, values: np.ndarray, *, name: str, dash: str,
                 what: str, show_legend: bool, max_points: int = MAX_POINTS, mode: str = "lines") -> go.Scatter:
    """A downsampled line (min and max per bucket kept) with hover of run, step and value."""
    keep = minmax_indices(values, max_points)
    keep = keep[np.isfinite(values[keep])]
    return go.Scatter(
        x=steps[keep], y=values[keep], mode=mode, name=ptext(name), legendgroup=view.label,
        showlegend=show_legend, line=dict(color=view.colour, dash=dash, width=1.5),
        marker=dict(size=5, color=view.colour),
        hovertemplate=f"<b>{ptext(view.label)}</b><br>step %{{x}}<br>{ptext(what)} %{{y:.4g}}<extra></extra>",
    )


def training_section(views: Sequence[RunView]) -> Section:
    """Loss (train and eval) and accuracy (train and eval) of every run."""
    section = Section("training", "Training and evaluation",
                      "Loss and accuracy against the step (solid: training batches, dashed: "
                      "held-out evaluation). A plain network that trains worse than its residual "
                      "twin while its gradients look healthy is optimisation difficulty, not "
                      "vanishing gradients.")
    metrics = [m for _, rows in _PANELS for m, _, _ in rows]
    if not any(m in v.series for v in views for m in metrics):
        section.notes.append("No run recorded loss or accuracy: nothing to draw.")
        return section
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss", "accuracy"], horizontal_spacing=0.08)
    shown: set[str] = set()
    for col, (panel, rows) in enumerate(_PANELS, start=1):
        values_all = []
        for view in views:
            for metric, kind, dash in rows:
                if metric not in view.series:
                    continue
                s, v = view.series[metric]
                values_all.append(v[np.isfinite(v)])
                mode = "lines" if kind == "train" else "lines+markers"
                fig.add_trace(series_trace(view, s, v, name=view.label, dash=dash,
                                           what=f"{kind} {panel}", show_legend=view.label not in shown,
                                           mode=mode), row=1, col=col)
                shown.add(view.label)
        vals = np.concatenate(values_all) if values_all else np.array([])
        pos = vals[vals > 0]
        log = panel == "loss" and pos.size > 1 and pos.max() / pos.min() > 100
        fig.update_yaxes(title_text=panel, type="log" if log else "linear", row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    missing = [v.label for v in views if not any(m in v.series for m in metrics)]
    if missing:
        section.notes.append(f"No loss or accuracy recorded in: {', '.join(missing)}.")
    base_layout(fig, height=400)
    section.figure = fig
    return section
