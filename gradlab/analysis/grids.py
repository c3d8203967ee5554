"""The long tables of a stored run as grids: per-layer metrics as (layer x step) matrices,
per-step metrics as sorted series. Linear in the number of rows; numpy and pandas only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd


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


def _step_index(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct steps, sorted, and each row's column among them.

    The store writes rows in step order, so the sorted case takes one pass instead of a sort.
    """
    if steps.size > 1 and np.all(steps[1:] >= steps[:-1]):
        new = np.empty(steps.size, dtype=bool)
        new[0] = True
        np.not_equal(steps[1:], steps[:-1], out=new[1:])
        return steps[new], np.cumsum(new) - 1
    return np.unique(steps, return_inverse=True)


def _one_matrix(name: str, idx: np.ndarray, layer_codes: np.ndarray, layer_names: list[str],
                step_all: np.ndarray, depth_all: np.ndarray, value_all: np.ndarray) -> LayerMatrix:
    """The grid of the rows ``idx`` (all of one metric): codes and scatter assignment, no pivot."""
    lc = layer_codes[idx]
    used = np.flatnonzero(np.bincount(lc, minlength=len(layer_names)))
    local = np.full(len(layer_names), -1, dtype=np.int64)
    local[used] = np.arange(used.size)
    li = local[lc]
    depth_of = np.zeros(used.size, dtype=np.int64)
    depth_of[li] = depth_all[idx]
    uniq, si = _step_index(step_all[idx])
    names = [layer_names[c] for c in used]
    order = np.lexsort((np.array(names, dtype=object).astype(str), depth_of))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rows = rank[li]
    values = np.full((used.size, uniq.size), np.nan)
    present = np.zeros((used.size, uniq.size), dtype=bool)
    values[rows, si] = value_all[idx]  # a (layer, step) pair recorded twice keeps the later row
    present[rows, si] = True
    return LayerMatrix(name, [names[i] for i in order], depth_of[order], uniq.astype(np.int64), values, present)


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
        if idx.size:
            out[name] = _one_matrix(name, idx, layer_codes, layer_names, step_all, depth_all, value_all)
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
