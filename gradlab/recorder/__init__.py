"""The gradient recorder: per-layer gradient-flow metrics from any PyTorch training loop.

>>> from gradlab.recorder import GradientRecorder
>>> with GradientRecorder(model, every=1) as rec:      # doctest: +SKIP
...     loss.backward(); rec.step(); opt.step()
>>> rec.to_frame()                                      # doctest: +SKIP
"""

from gradlab.recorder.core import GradientRecorder
from gradlab.recorder.metrics import (
    ACT_COS,
    ACT_DEAD_UNITS,
    ACT_DEAD_UNITS_RUN,
    ACT_GRAD_COS,
    ACT_GRAD_COS_CLASS,
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_SATURATED_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    ALL_METRICS,
    DEFAULT_METRICS,
    GRAD_NONFINITE,
    GRAD_NORM,
    LAYER_METRICS,
    SKIPPED,
    STEP_METRICS,
    TOTAL_GRAD_NORM,
    UPDATE_RATIO,
    WEIGHT_NORM,
)

__all__ = [
    "GradientRecorder",
    "GRAD_NORM",
    "WEIGHT_NORM",
    "UPDATE_RATIO",
    "ACT_GRAD_NORM",
    "ACT_MEAN",
    "ACT_STD",
    "ACT_ZERO_FRAC",
    "ACT_DEAD_UNITS",
    "ACT_DEAD_UNITS_RUN",
    "ACT_COS",
    "ACT_GRAD_COS",
    "ACT_GRAD_COS_CLASS",
    "ACT_SATURATED_FRAC",
    "GRAD_NONFINITE",
    "TOTAL_GRAD_NORM",
    "SKIPPED",
    "LAYER_METRICS",
    "STEP_METRICS",
    "ALL_METRICS",
    "DEFAULT_METRICS",
]
