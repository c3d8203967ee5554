"""Downsampling for display that keeps the extremes: per bucket, the minimum and the maximum.

A line of 10,000 steps becomes at most ``max_points`` points: every bucket of neighbouring
steps contributes the point where it is lowest and the point where it is highest (in step
order), so a spike or a dip of one step survives. A layer x step grid is cut into buckets of
neighbouring layers and steps; each bucket becomes two cells side by side, its minimum then
its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices to keep from a series so that each bucket keeps its min and max (finite values).

    All indices when the series is short enough. Non-finite values are never chosen here
    (figures mark them separately). The first and last finite points are always kept.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = int(np.ceil(n / buckets))
    buckets = int(np.ceil(n / size))
    pad = buckets * size - n
    finite = np.isfinite(values)
    lo = np.concatenate([np.where(finite, values, np.inf), np.full(pad, np.inf)]).reshape(buckets, size)
    hi = np.concatenate([np.where(finite, values, -np.inf), np.full(pad, -np.inf)]).reshape(buckets, size)
    base = np.arange(buckets) * size
    amin = base + lo.argmin(axis=1)
    amax = base + hi.argmax(axis=1)
    has = np.isfinite(lo).any(axis=1)
    keep = np.concatenate([amin[has], amax[has]])
    ends = np.flatnonzero(finite)
    if ends.size:
        keep = np.concatenate([keep, ends[[0, -1]]])
    return np.unique(keep)


def bucket_starts(n: int, max_buckets: int) -> np.ndarray:
    """Start indices of at most ``max_buckets`` near-equal buckets over ``n`` items."""
    if n <= max_buckets:
        return np.arange(n)
    return np.unique(np.linspace(0, n, max_buckets + 1).astype(np.int64)[:-1])


@dataclass
class Grid:
    """A layer x step grid ready for a heatmap.

    ``z`` holds log10 values with -inf for zeros (underflow) and +inf for non-finite values;
    NaN where nothing was recorded. ``row_starts``/``col_starts`` index the first layer/step
    of each bucket; ``paired`` says whether columns come as (min, max) pairs.
    """

    z: np.ndarray
    row_starts: np.ndarray
    col_starts: np.ndarray
    paired: bool


def log_codes(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """log10 of a grid of norms: -inf for 0.0, +inf for NaN/inf/negative, NaN where absent."""
    out = np.full(values.shape, np.nan)
    finite = present & np.isfinite(values)
    pos = finite & (values > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[pos] = np.log10(values[pos])
    out[finite & (values == 0)] = -np.inf
    out[present & ~pos & ~(finite & (values == 0))] = np.inf
    return out


def minmax_grid(z: np.ndarray, max_rows: int, max_cols: int) -> Grid:
    """Bucket a grid of log codes (see :func:`log_codes`), keeping each bucket's min and max.

    Without any bucketing the grid is returned as is. Otherwise every bucket of rows x columns
    turns into two cells in one row: the bucket's minimum, then its maximum (``fmin``/``fmax``
    skip absent cells, so a bucket is absent only when all of it is).
    """
    rows, cols = z.shape
    if rows <= max_rows and cols <= max_cols:
        return Grid(z, np.arange(rows), np.arange(cols), paired=False)
    r0 = bucket_starts(rows, max_rows)
    c0 = bucket_starts(cols, max(1, max_cols // 2))
    zmin = np.fmin.reduceat(np.fmin.reduceat(z, r0, axis=0), c0, axis=1)
    zmax = np.fmax.reduceat(np.fmax.reduceat(z, r0, axis=0), c0, axis=1)
    paired = np.empty((len(r0), 2 * len(c0)))
    paired[:, 0::2] = zmin
    paired[:, 1::2] = zmax
    return Grid(paired, r0, c0, paired=True)
