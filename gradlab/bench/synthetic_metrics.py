"""The per-layer metrics the benchmarks' synthetic runs hold, named by the metric schema.

Every layer metric a convolutional or linear layer gets when the recorder is asked for all its
cheap statistics, in the schema's layout order: the report benchmark fills each with plausible
values, the store benchmark writes that many records per layer and step.
"""

from __future__ import annotations

from gradlab.common import metrics as M

#: Layer metrics of a synthetic run, in the schema's layout order.
SYNTHETIC_LAYER_METRICS: tuple[str, ...] = tuple(M.in_layout_order((
    M.GRAD_NORM, M.WEIGHT_NORM, M.UPDATE_RATIO, M.ACT_GRAD_NORM, M.ACT_MEAN, M.ACT_STD,
    M.ACT_ZERO_FRAC, M.ACT_SATURATED_FRAC, M.GRAD_NONFINITE,
)))
