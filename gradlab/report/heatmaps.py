"""Layer x step heatmaps (gradient flow, update ratios): colour = log10 of the value.

All runs of one metric share one colour scale, so equal colours mean equal norms across
runs. Two marked bands sit outside the data's range: grey below it for zeros ("underflow",
a norm below float32's smallest value) and magenta above it for NaN/inf ("non-finite").
Input layers are at the bottom, the output at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from gradlab.analysis.diagnose import LayerMatrix
from gradlab.report.data import RunView
from gradlab.report.downsample import Grid, log_codes, minmax_grid
from gradlab.report.layerpick import Keep, subset
from gradlab.report.style import (
    NONFINITE_COLOUR,
    UNDERFLOW_COLOUR,
    Section,
    base_layout,
    decade_label,
    log_ticks,
    ptext,
)

MAX_ROWS = 200  # layers shown before neighbouring layers are bucketed
MAX_COLS = 400  # columns shown before steps are bucketed (each bucket: a min and a max column)
ROW_HEIGHT = 270
SMALL_HEIGHT = 190  # height of one small multiple when many runs share the figure
MAX_SINGLE = 2  # up to this many runs get one full-width heatmap each; more become small multiples
GRID_COLS = 4


def _colour_scale(cmin: float, cmax: float, band: float) -> list[list]:
    """Viridis over the data, with flat underflow and non-finite bands at the two ends."""
    f = band / (cmax - cmin)
    inner = sample_colorscale("Viridis", list(np.linspace(0, 1, 11)))
    # The band edges sit halfway between the marked values and the data, so that the data's
    # own extremes never land on an edge.
    scale: list[list] = [[0.0, UNDERFLOW_COLOUR], [f / 2, UNDERFLOW_COLOUR], [f / 2, inner[0]]]
    for j, c in enumerate(inner):
        scale.append([f + (1 - 2 * f) * j / 10, c])
    scale += [[1 - f / 2, inner[-1]], [1 - f / 2, NONFINITE_COLOUR], [1.0, NONFINITE_COLOUR]]
    return scale


def _row_labels(view_layers: list[str], depths: np.ndarray, starts: np.ndarray) -> list[str]:
    labels = []
    ends = list(starts[1:]) + [len(view_layers)]
    for a, b in zip(starts, ends, strict=True):
        if b - a == 1:
            labels.append(ptext(f"{depths[a]} {view_layers[a]}"))
        else:
            labels.append(ptext(f"{depths[a]}-{depths[b - 1]} {view_layers[a]} .. {view_layers[b - 1]}"))
    return labels


def _columns(steps: np.ndarray, grid: Grid) -> np.ndarray:
    """x of each column: the step, or for (min, max) pairs the bucket's first step and its middle."""
    if not grid.paired:
        return steps[grid.col_starts].astype(np.float64)
    ends = np.append(grid.col_starts[1:], len(steps)) - 1
    lo, hi = steps[grid.col_starts].astype(np.float64), steps[ends].astype(np.float64)
    x = np.empty(2 * len(lo))
    x[0::2] = lo
    x[1::2] = lo + np.maximum((hi - lo) / 2, 0.5)
    return x


def heatmap_section(views: Sequence[RunView], metric: str, *, key: str, title: str, intro: str,
                    unit: str, max_rows: int = MAX_ROWS, max_cols: int = MAX_COLS,
                    keep: Keep | None = None) -> Section:
    """One heatmap per run of ``metric`` on a shared colour scale (or a note without data).

    Up to :data:`MAX_SINGLE` runs get a full-width panel each, with layer names on the axis;
    more runs become small multiples, :data:`GRID_COLS` a row, on the same colour scale and
    step axis, layer names in the hover. ``keep`` picks the layers (see
    :mod:`gradlab.report.layerpick`); None keeps all.
    """
    section = Section(key, title, intro)
    grids = _grids(views, metric, keep, max_rows, max_cols)
    missing = [v.label for v in views if v.label not in {g[0].label for g in grids}]
    if not grids:
        section.notes.append(f"No run recorded {metric}: nothing to draw.")
        return section
    if missing:
        section.notes.append(f"Not recorded ({metric}) in: {', '.join(missing)}.")
    scale = _ColourRange.of(grids)
    small = len(grids) > MAX_SINGLE
    ncols = min(GRID_COLS, len(grids)) if small else 1
    nrows = -(-len(grids) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, vertical_spacing=min(0.14, 0.45 / nrows),
                        horizontal_spacing=0.03 if small else 0.2, shared_xaxes=small,
                        subplot_titles=[f"<span style='color:{v.colour}'>■</span> {ptext(v.label)}"
                                        for v, _, _ in grids])
    for i, (view, m, grid) in enumerate(grids):
        row, col = i // ncols + 1, i % ncols + 1
        fig.add_trace(_heatmap(view, m, grid, metric, scale), row=row, col=col)
        fig.update_yaxes(title_text=None if small else "layer (depth name)", row=row, col=col,
                         automargin=not small, tickfont=dict(size=9), type="category",
                         showticklabels=not small)
        fig.update_xaxes(title_text="step" if row == nrows else None, row=row, col=col)
        if grid.paired:
            section.notes.append(
                f"{view.label}: {len(m.layers)} layers x {len(m.steps)} steps shown as "
                f"{len(grid.row_starts)} rows x {len(grid.col_starts)} step buckets; each bucket "
                "is two columns, its minimum then its maximum, so spikes and dips stay visible."
            )
    if small:
        section.notes.append(f"{len(grids)} runs as small multiples on one colour scale; input at the "
                             "bottom of each panel, layer names in the hover.")
    base_layout(fig, height=(SMALL_HEIGHT if small else ROW_HEIGHT) * nrows + 90, legend=False)
    if small:
        fig.update_annotations(font_size=10)
    fig.update_layout(coloraxis=scale.colour_axis(unit, nrows))
    section.figure = fig
    return section


def _grids(views: Sequence[RunView], metric: str, keep: Keep | None, max_rows: int,
           max_cols: int) -> list[tuple[RunView, LayerMatrix, Grid]]:
    """The runs that recorded ``metric`` on a kept layer, with their bucketed log10 grids."""
    grids = []
    for view in views:
        m = view.matrices.get(metric)
        if m is None or not m.present.any():
            continue
        if keep is not None:
            m = subset(m, keep(view, m))
            if not m.present.any():
                continue
        grids.append((view, m, minmax_grid(log_codes(m.values, m.present), max_rows, max_cols)))
    return grids


@dataclass
class _ColourRange:
    """The shared colour scale: the data's log10 range, with an underflow and a non-finite
    band of width ``band`` below and above it."""

    zmin: float
    zmax: float
    band: float

    @classmethod
    def of(cls, grids: Sequence[tuple[RunView, LayerMatrix, Grid]]) -> _ColourRange:
        finite = np.concatenate([g.z[np.isfinite(g.z)] for _, _, g in grids])
        zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        if zmax - zmin < 1e-9:
            zmin, zmax = zmin - 0.5, zmax + 0.5
        return cls(zmin, zmax, max(0.3, 0.06 * (zmax - zmin)))

    @property
    def cmin(self) -> float:
        return self.zmin - self.band

    @property
    def cmax(self) -> float:
        return self.zmax + self.band

    def colour_axis(self, unit: str, nrows: int) -> dict:
        ticks = log_ticks(self.zmin, self.zmax)
        tickvals = [self.cmin + self.band / 2, *ticks, self.cmax - self.band / 2]
        ticktext = ["underflow (0.0)", *(decade_label(k) for k in ticks), "non-finite"]
        return dict(
            colorscale=_colour_scale(self.cmin, self.cmax, self.band), cmin=self.cmin, cmax=self.cmax,
            colorbar=dict(title=dict(text=ptext(unit), side="right"), tickvals=tickvals,
                          ticktext=ticktext, len=min(1.0, 0.9 if nrows == 1 else 1.0)),
        )


def _heatmap(view: RunView, m: LayerMatrix, grid: Grid, metric: str, scale: _ColourRange) -> go.Heatmap:
    """One run's heatmap: zeros and NaN/inf coloured as the bands, raw values in the hover."""
    z = grid.z.copy()
    z[z == -np.inf] = scale.cmin
    z[z == np.inf] = scale.cmax
    with np.errstate(over="ignore"):
        raw = np.where(np.isfinite(grid.z), 10.0 ** grid.z, np.nan)
    raw[grid.z == -np.inf] = 0.0
    raw[grid.z == np.inf] = np.inf
    how = "min|max of a bucket" if grid.paired else "value"
    return go.Heatmap(
        x=_columns(m.steps, grid),
        y=_row_labels(m.layers, m.depths, grid.row_starts),
        z=z.astype(np.float32),
        customdata=raw.astype(np.float32),
        coloraxis="coloraxis",
        hovertemplate=(f"<b>{ptext(view.label)}</b><br>layer %{{y}}<br>step %{{x}}<br>"
                       f"{ptext(metric)} ({how}) %{{customdata:.3e}}<extra></extra>"),
    )
