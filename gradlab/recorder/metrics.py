"""The recorder's view of the metrics: which modules count as which kind of activation.

The names and sets are those of :mod:`gradlab.common.metrics`, the schema every layer reads;
they are re-exported here because the recorder's users import them from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

# The names and sets come from the torch-free schema, shared with the store, diagnosis and report.
from gradlab.common.metrics import (  # noqa: F401  (re-exported: the recorder's public names)
    ACT_COS,
    ACT_DEAD_UNITS,
    ACT_DEAD_UNITS_RUN,
    ACT_GRAD_COS,
    ACT_GRAD_COS_CLASS,
    ACT_GRAD_METRICS,
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_SATURATED_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    ACTIVATION_METRICS,
    DEFAULT_METRICS,
    GRAD_NONFINITE,
    GRAD_NORM,
    LAYER_METRICS,
    PARAM_METRICS,
    SKIPPED,
    TOTAL_GRAD_NORM,
    UPDATE_RATIO,
    WEIGHT_NORM,
)
from gradlab.common.metrics import RECORDER_METRICS as ALL_METRICS
from gradlab.common.metrics import RECORDER_STEP_METRICS as STEP_METRICS  # noqa: F401
from gradlab.errors import GradlabError

#: Activation modules whose outputs are exactly 0 on a dead unit: act_zero_frac, act_dead_units
#: and act_dead_units_run are recorded for them.
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Threshold)
#: Saturating activations: act_saturated_frac is recorded for them.
SATURATING: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Tanh)
#: Other activation modules: counted as layers by default (for act_mean, act_std, act_grad_norm).
OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink,
)
ACTIVATIONS = RELU_FAMILY + SATURATING + OTHER_ACTIVATIONS
#: Normalisation modules: layers by default even without affine parameters.
NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
)

DEFAULT_SATURATION_THRESHOLD = 0.01


def parse_metrics(metrics: str | Iterable[str] | None) -> tuple[str, ...]:
    """The selected metric names, in layout order; a one-line GradlabError for unknown names."""
    if metrics is None or metrics == "default":
        return DEFAULT_METRICS
    if metrics == "all":
        return ALL_METRICS
    if isinstance(metrics, str):
        metrics = [metrics]
    try:
        names = list(metrics)
    except TypeError:
        raise GradlabError(
            f"metrics must be None, 'all' or a list of metric names, got {type(metrics).__name__}: "
            f"pass e.g. metrics=['grad_norm', 'act_grad_norm']"
        ) from None
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown:
        raise GradlabError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(ALL_METRICS)}, or pass metrics='all'"
        )
    if not names:
        raise GradlabError("metrics= is empty: pass None for the default set, 'all', or a list of names")
    chosen = set(names)
    return tuple(n for n in ALL_METRICS if n in chosen)


def check_saturation_threshold(t: float) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
        raise GradlabError(
            f"saturation_threshold must be a fraction in (0, 1), got {t!r}: "
            "pass e.g. saturation_threshold=0.01"
        )
    return float(t)


def activation_kind(module: nn.Module) -> str | None:
    """'relu' (dead fraction applies), 'sigmoid' or 'tanh' (saturation applies), or None."""
    if isinstance(module, RELU_FAMILY):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    return None


def saturation_band(kind: str, threshold: float) -> tuple[float, float]:
    """The output interval [lo, hi] where the derivative is at least ``threshold`` times its maximum.

    Outputs outside it are saturated. Written in terms of the output y, because that is what a
    forward hook sees: sigmoid' = y(1-y) (max 1/4), tanh' = 1 - y^2 (max 1).
    """
    if kind == "sigmoid":
        half = 0.5 * math.sqrt(1.0 - threshold)  # y(1-y) >= t/4  <=>  |y - 1/2| <= half
        return 0.5 - half, 0.5 + half
    if kind == "tanh":
        half = math.sqrt(1.0 - threshold)  # 1 - y^2 >= t  <=>  |y| <= half
        return -half, half
    raise ValueError(kind)
