"""Phases of training (init, early, late) as windows of recorded steps, and one phase's depth profile."""

from __future__ import annotations

import warnings

import numpy as np

from gradlab.analysis.grids import LayerMatrix

#: Phases of training, each a window of recorded steps (see :func:`phase_windows`).
PHASES = ("init", "early", "late")


def phase_windows(n_steps: int) -> dict[str, slice]:
    """Which recorded steps (by index) make up each phase of training.

    ``init`` is the first recorded step alone; ``late`` the last tenth of the recorded steps
    (at least one); ``early`` the first tenth after init (at least one), when it does not
    reach into ``late``. One recorded step gives ``init`` only; two give ``init`` and ``late``.
    """
    if n_steps <= 0:
        return {}
    windows = {"init": slice(0, 1)}
    if n_steps == 1:
        return windows
    tenth = max(1, int(np.ceil(n_steps / 10)))
    late_start = max(1, n_steps - tenth)
    early_stop = min(1 + tenth, late_start)
    if early_stop > 1:
        windows["early"] = slice(1, early_stop)
    windows["late"] = slice(late_start, n_steps)
    return {p: windows[p] for p in PHASES if p in windows}


def event_windows(steps: np.ndarray, windows: dict[str, slice]) -> dict[str, tuple[int, int]]:
    """Step ranges for counting events (non-finite/skipped steps, clipping) per phase.

    Unlike the profiles, these cover every step: init is its own step, early runs up to its
    last recorded step, and late takes every step after that, so no event falls between phases.
    """
    out: dict[str, tuple[int, int]] = {}
    first = int(steps[0])
    out["init"] = (first, first)
    end = first
    if "early" in windows:
        end = int(steps[windows["early"].stop - 1])
        out["early"] = (first + 1, end)
    if "late" in windows:
        out["late"] = (end + 1, int(np.iinfo(np.int64).max))
    # The last phase takes every later step, so a run that stopped on a non-finite step
    # between two recorded steps still counts it.
    last = list(out)[-1]
    out[last] = (out[last][0], int(np.iinfo(np.int64).max))
    return out


def window_profile(matrix: LayerMatrix, window: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phase's depth profile: (row indices, per-layer value, non-finite count per layer).

    A layer's value is the median of its finite recorded values in the window (the raw value
    for a one-step window); NaN when every value it recorded there was non-finite. Layers that
    recorded nothing in the window are left out.
    """
    values = matrix.values[:, window]
    present = matrix.present[:, window]
    finite = present & np.isfinite(values)
    nonfinite = (present & ~finite).sum(axis=1)
    rows = np.flatnonzero(present.any(axis=1))
    if values.shape[1] == 1:
        med = np.where(finite[:, 0], values[:, 0], np.nan)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN is the answer
            med = np.nanmedian(np.where(finite, values, np.nan), axis=1)
    return rows, med[rows], nonfinite[rows]
