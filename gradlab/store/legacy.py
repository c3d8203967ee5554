"""Metric names of runs stored by older versions, mapped to today's meaning when read (torch-free).

Before the dead-unit metrics existed, ``act_dead_frac`` held the fraction of a ReLU layer's
output elements that were exactly 0: about one half for any ReLU at initialisation, not a
count of dead units. Today that quantity is ``act_zero_frac``, and dead units are
``act_dead_units`` (0 for every example of the batch) and ``act_dead_units_run`` (and at every
recorded step). A run that has ``act_dead_frac`` but no ``act_dead_units`` was written before
the change, so its ``act_dead_frac`` rows are read as ``act_zero_frac``: no report or diagnosis
then shows a zero fraction as "dead".
"""

from __future__ import annotations

import pandas as pd

from gradlab.common import metrics as M

ZERO_FRAC = M.ACT_ZERO_FRAC
DEAD_UNITS = M.ACT_DEAD_UNITS
#: The old name of today's zero fraction, as the schema's table of legacy names has it.
(LEGACY_ZERO_FRAC,) = (old for old, new in M.LEGACY_NAMES.items() if new == ZERO_FRAC)


def rename_legacy_metrics(layers: pd.DataFrame) -> pd.DataFrame:
    """``layers`` (a run's layer table) with old-meaning metric names renamed; unchanged otherwise."""
    if "metric" not in layers.columns or layers.empty:
        return layers
    metric = layers["metric"]
    names = set(metric.cat.categories) if isinstance(metric.dtype, pd.CategoricalDtype) else set(metric.unique())
    if LEGACY_ZERO_FRAC not in names or DEAD_UNITS in names:
        return layers
    out = layers.copy(deep=False)
    if isinstance(metric.dtype, pd.CategoricalDtype) and ZERO_FRAC not in names:
        # a rename of one dictionary entry: no pass over the rows
        out["metric"] = metric.cat.rename_categories({LEGACY_ZERO_FRAC: ZERO_FRAC})
    else:
        renamed = metric.astype(object).where(metric != LEGACY_ZERO_FRAC, ZERO_FRAC)
        out["metric"] = renamed.astype(metric.dtype.name if not isinstance(metric.dtype, pd.CategoricalDtype)
                                       else "category")
    return out
