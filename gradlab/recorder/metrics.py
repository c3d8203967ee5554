"""Metric names, the metric sets, and which modules count as which kind of activation.

The names are part of the data model: the store, the reports and the diagnosis read them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

from gradlab.errors import GradlabError

# Per-layer metrics.
GRAD_NORM = "grad_norm"
WEIGHT_NORM = "weight_norm"
UPDATE_RATIO = "update_ratio"
ACT_GRAD_NORM = "act_grad_norm"
ACT_MEAN = "act_mean"
ACT_STD = "act_std"
ACT_ZERO_FRAC = "act_zero_frac"  # fraction of output elements exactly 0 (was stored as act_dead_frac)
ACT_DEAD_UNITS = "act_dead_units"  # fraction of units that are 0 for every example of the batch
ACT_DEAD_UNITS_RUN = "act_dead_units_run"  # ... and at every recorded step so far
ACT_SATURATED_FRAC = "act_saturated_frac"
ACT_COS = "act_cos"  # mean pairwise cosine of the per-example outputs across the batch
ACT_GRAD_COS = "act_grad_cos"  # the same of dL/dh
ACT_GRAD_COS_CLASS = "act_grad_cos_class"  # the same of dL/dh, over same-label pairs only
GRAD_NONFINITE = "grad_nonfinite"

# Per-step metrics.
TOTAL_GRAD_NORM = "total_grad_norm"
SKIPPED = "skipped"  # only in optimizer mode, for a step the GradScaler skipped

#: Per-layer metrics, in the order their columns are laid out (and rows are sorted).
LAYER_METRICS: tuple[str, ...] = (
    GRAD_NORM,
    WEIGHT_NORM,
    UPDATE_RATIO,
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_STD,
    ACT_ZERO_FRAC,
    ACT_DEAD_UNITS,
    ACT_DEAD_UNITS_RUN,
    ACT_SATURATED_FRAC,
    ACT_COS,
    ACT_GRAD_COS,
    ACT_GRAD_COS_CLASS,
    GRAD_NONFINITE,
)
#: Per-step metrics that ``metrics=`` may name.
STEP_METRICS: tuple[str, ...] = (TOTAL_GRAD_NORM,)
ALL_METRICS: tuple[str, ...] = LAYER_METRICS + STEP_METRICS
#: The default set: cheap, needs no forward hooks. A NaN or inf in a layer's gradient already
#: makes its grad_norm non-finite, so the first non-finite step is found without the exact count
#: (grad_nonfinite), which costs more passes over the gradients than the norms themselves.
DEFAULT_METRICS: tuple[str, ...] = (GRAD_NORM, WEIGHT_NORM, TOTAL_GRAD_NORM)

#: Metrics read from parameters and their ``.grad`` after backward.
PARAM_METRICS = frozenset({GRAD_NORM, WEIGHT_NORM, UPDATE_RATIO, GRAD_NONFINITE, TOTAL_GRAD_NORM})
#: Metrics that need forward hooks (and, for ACT_GRAD_NORM, tensor hooks).
ACTIVATION_METRICS = frozenset({
    ACT_GRAD_NORM, ACT_MEAN, ACT_STD, ACT_ZERO_FRAC, ACT_DEAD_UNITS, ACT_DEAD_UNITS_RUN, ACT_SATURATED_FRAC,
    ACT_COS, ACT_GRAD_COS, ACT_GRAD_COS_CLASS,
})
#: Metrics taken from dL/dh at layer outputs (need a tensor hook on the output).
ACT_GRAD_METRICS = frozenset({ACT_GRAD_NORM, ACT_GRAD_COS, ACT_GRAD_COS_CLASS})

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
