"""Where each recorded value sits in a buffer row, and what a finished row says about finiteness.

One recorded step is one row on the device: a block of ``L`` columns per chosen per-layer
metric (in the schema's layout order), then the total gradient norm when it is chosen. Step
frames add one virtual column per host-made step metric (the GradScaler's skipped steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradlab.common.metrics import ACT_GRAD_NORM, GRAD_NONFINITE, GRAD_NORM, LAYER_METRICS, SKIPPED, TOTAL_GRAD_NORM
from gradlab.recorder.buffer import Chunk

#: Per-step metric names as they appear in step frames.
STEP_NAMES = (TOTAL_GRAD_NORM, SKIPPED)


@dataclass(frozen=True)
class RowLayout:
    """The columns of a recorder's buffer row for ``metrics`` over ``num_layers`` layers."""

    blocks: dict[str, slice]  # per-layer metric -> its columns
    layer_width: int  # columns of per-layer values
    total_col: int | None  # the total gradient norm's column, when recorded
    width: int  # device columns (at least 1)
    col_layer: np.ndarray  # column -> layer index
    col_metric: np.ndarray  # column -> index into LAYER_METRICS
    step_col_metric: np.ndarray  # step column (device ones, then virtual) -> index into STEP_NAMES
    skip_col: int  # the virtual step column of skipped steps

    @classmethod
    def of(cls, metrics: tuple[str, ...], num_layers: int) -> RowLayout:
        blocks: dict[str, slice] = {}
        col_layer: list[int] = []
        col_metric: list[int] = []
        for mi, m in enumerate(LAYER_METRICS):
            if m in metrics:
                blocks[m] = slice(len(col_layer), len(col_layer) + num_layers)
                col_layer.extend(range(num_layers))
                col_metric.extend([mi] * num_layers)
        layer_width = len(col_layer)
        total_col = layer_width if TOTAL_GRAD_NORM in metrics else None
        width = max(layer_width + (total_col is not None), 1)
        pad = [0] * (width - len(col_layer))
        step_col_metric = np.zeros(width + len(STEP_NAMES), dtype=np.int64)
        if total_col is not None:
            step_col_metric[total_col] = STEP_NAMES.index(TOTAL_GRAD_NORM)
        skip_col = width + STEP_NAMES.index(SKIPPED)
        step_col_metric[skip_col] = STEP_NAMES.index(SKIPPED)
        return cls(blocks, layer_width, total_col, width, np.array(col_layer + pad, dtype=np.int64),
                   np.array(col_metric + pad, dtype=np.int64), step_col_metric, skip_col)

    def first_nonfinite(self, ch: Chunk, depth: np.ndarray) -> dict[str, int | str] | None:
        """``{step, layer, metric}`` of the first row of ``ch`` showing a NaN or inf gradient.

        A non-zero ``grad_nonfinite`` count or a non-finite gradient norm shows it. Of several
        layers in that row, the deepest, which the backward pass reached first.
        """
        names = np.asarray(LAYER_METRICS)[self.col_metric[ch.cols]]
        count_cols = names == GRAD_NONFINITE
        norm_cols = (names == GRAD_NORM) | (names == ACT_GRAD_NORM)
        bad = (count_cols[None, :] & (ch.values != 0)) | (norm_cols[None, :] & ~np.isfinite(ch.values))
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            return None
        r = rows[0]
        cols = ch.cols[bad[r]]
        layers = self.col_layer[cols]
        k = int(np.argmax(depth[layers]))
        return {"step": int(ch.steps[r]), "layer": int(layers[k]),
                "metric": LAYER_METRICS[int(self.col_metric[cols[k]])]}
