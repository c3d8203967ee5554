"""Tidy pandas frames built from compact host chunks, only when asked for."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.recorder.buffer import Chunk

LAYER_COLUMNS = ["step", "layer", "depth", "metric", "value"]
STEP_COLUMNS = ["step", "metric", "value"]


def _flatten(chunks: Sequence[Chunk], rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps, cols, vals = [], [], []
    for ch in chunks:
        order = np.argsort(rank[ch.cols], kind="stable")
        c = ch.cols[order]
        r, k = ch.values.shape
        steps.append(np.repeat(ch.steps, k))
        cols.append(np.tile(c, r))
        vals.append(ch.values[:, order].reshape(-1))
    if not steps:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    step = np.concatenate(steps)
    col = np.concatenate(cols)
    val = np.concatenate(vals).astype(np.float64)
    if step.size and np.any(step[1:] < step[:-1]):  # chunks of different patterns interleave
        order = np.argsort(step, kind="stable")
        step, col, val = step[order], col[order], val[order]
    return step, col, val


def layer_frame(chunks: Sequence[Chunk], col_layer: np.ndarray, col_metric: np.ndarray,
                layer_names: Sequence[str], layer_depth: np.ndarray,
                metric_names: Sequence[str]) -> pd.DataFrame:
    """Columns step, layer, depth, metric, value; rows by step, then depth, then metric."""
    rank = layer_depth[col_layer].astype(np.int64) * (len(metric_names) + 1) + col_metric
    step, col, val = _flatten(chunks, rank)
    li = col_layer[col]
    names = np.asarray(list(layer_names), dtype=object)
    metrics = np.asarray(list(metric_names), dtype=object)
    return pd.DataFrame(
        {
            "step": step.astype(np.int64),
            "layer": names[li] if li.size else np.zeros(0, dtype=object),
            "depth": layer_depth[li].astype(np.int64),
            "metric": metrics[col_metric[col]] if col.size else np.zeros(0, dtype=object),
            "value": val,
        },
        columns=LAYER_COLUMNS,
    )


def step_frame(chunks: Sequence[Chunk], col_metric: np.ndarray, metric_names: Sequence[str]) -> pd.DataFrame:
    """Columns step, metric, value; rows by step, then metric."""
    step, col, val = _flatten(chunks, col_metric)
    metrics = np.asarray(list(metric_names), dtype=object)
    return pd.DataFrame(
        {
            "step": step.astype(np.int64),
            "metric": metrics[col_metric[col]] if col.size else np.zeros(0, dtype=object),
            "value": val,
        },
        columns=STEP_COLUMNS,
    )
