"""The mean-field prediction of a net's per-layer ||dL/dh|| at initialisation, and its summary.

:func:`predict_profile` traces the model, runs the rules of :mod:`gradlab.theory.rules` along
its chain and carries E[g^2] back from the last layer; the formulas are in the theory note of
:mod:`gradlab.theory.meanfield`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradlab.common.fit import slope
from gradlab.errors import GradlabError, first_line
from gradlab.models import build_model, native_input_size
from gradlab.theory.activations import Activation
from gradlab.theory.geometry import layer_backward, valid_fraction
from gradlab.theory.rules import Layer, propagate
from gradlab.theory.trace import Op, data_path, trace_model

NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def predict_profile(
    model: nn.Module,
    input_size: tuple[int, ...],
    *,
    activation: Activation | None = None,
    input_second_moment: float = 1.0,
) -> pd.DataFrame:
    """Predict the per-layer norm of dL/dh of a plain net from its initialised weights.

    ``input_size`` is one sample's shape without the batch dimension, e.g. ``(3, 32, 32)``.
    The model is run once on a batch of one (under ``no_grad``, in its current train/eval mode)
    to find the Conv/Linear layers in forward order and what lies between them; their actual
    weights give var_w, so any init works. ``activation`` overrides the elementwise map found
    between layers (a name or callable; needed only for custom activations the tracer does not
    know). ``input_second_moment`` is E[x^2] per input element (1.0 for standardised data).

    Returns one row per layer with columns ``layer, depth, type, fan_in, fan_out, var_w,
    var_b, sigma_w2, valid_frac, numel, q, approx, act, chi, chi_unit, pred_log10,
    pred_rel``; see the theory note in :mod:`gradlab.theory.meanfield` for the definitions. ``chi`` is the factor of the
    *squared* norm from this layer's output back to the previous layer's. The summary of
    :func:`summarize_profile` is also in ``frame.attrs``.

    Raises :class:`GradlabError` for nets the prediction does not cover: normalisation layers,
    shortcuts or concatenations, or an unrecognised op between layers.
    """
    shape = _check_arguments(model, input_size, input_second_moment)
    layers = propagate(_traced_path(model, shape), activation, float(input_second_moment))
    g_sums = _backward_sums(layers)
    frame = pd.DataFrame([_row(layers, depth, g_sums) for depth in range(len(layers))])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rel = 0.5 * (np.log10(np.array(g_sums)) - math.log10(g_sums[-1]))
    frame["pred_log10"] = log_rel
    frame["pred_rel"] = 10.0**log_rel
    frame.attrs.update(summarize_profile(frame))
    return frame


def _check_arguments(model: nn.Module, input_size: tuple[int, ...], input_second_moment: float) -> tuple[int, ...]:
    """Refuse what the prediction does not cover before tracing; return one sample's shape."""
    if not isinstance(model, nn.Module):
        raise GradlabError(f"predict_profile needs an nn.Module, got {type(model).__name__}")
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, NORM_TYPES)})
    if norms:
        raise GradlabError(
            f"the mean-field prediction covers plain nets without normalisation; this model has {', '.join(norms)} "
            "(use norm=none)"
        )
    if not (
        isinstance(input_second_moment, (int, float))
        and math.isfinite(input_second_moment)
        and input_second_moment >= 0
    ):
        raise GradlabError(f"input_second_moment must be a finite number >= 0, got {input_second_moment!r}")
    try:
        shape = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise GradlabError(f"input_size must be a tuple of ints such as (3, 32, 32), got {input_size!r}") from None
    if not shape or min(shape) <= 0:
        raise GradlabError(f"input_size must be one sample's shape such as (3, 32, 32), got {input_size!r}")
    return shape


def _traced_path(model: nn.Module, shape: tuple[int, ...]) -> list[Op]:
    """The ops from the input to the output of ``model`` run on one random sample of ``shape``."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn((1, *shape), device=device, dtype=dtype)
    try:
        ops, end = trace_model(model, x)
    except GradlabError:
        raise
    except RuntimeError as exc:  # a shape mismatch: the input size does not fit the model
        first = first_line(exc)
        raise GradlabError(f"the model does not run on input_size {shape}: {first}") from None
    return data_path(ops, end)


def _backward_sums(layers: list[Layer]) -> list[float]:
    """Sum of E[g^2] over each layer's output entries, in forward order.

    E[g^2] starts uniform over the last layer's output (the loss is not modelled), then passes
    each layer's weights and the steps between it and the layer before.
    """
    g_map = torch.ones((1, *layers[-1].op.out_shape[1:]), dtype=torch.float64)
    g_sums = [float(g_map.sum())]
    for idx in range(len(layers) - 1, 0, -1):
        g_map = layer_backward(layers[idx].op, g_map, layers[idx].var_w)
        for step in reversed(layers[idx - 1].back):
            g_map = step(g_map)
        g_sums.append(float(g_map.sum()))
    return g_sums[::-1]


def _row(layers: list[Layer], depth: int, g_sums: list[float]) -> dict[str, Any]:
    """One layer's row of the profile (without pred_log10 and pred_rel)."""
    layer = layers[depth]
    op = layer.op
    numel = int(np.prod(op.out_shape[1:]))
    prev_numel = int(np.prod(layers[depth - 1].op.out_shape[1:])) if depth else numel
    with np.errstate(divide="ignore", invalid="ignore"):
        chi_l = np.float64(g_sums[depth - 1]) / g_sums[depth] if depth else math.nan
    return {
        "layer": op.module,
        "depth": depth,
        "type": op.name,
        "fan_in": layer.fan_in,
        "fan_out": layer.fan_out,
        "var_w": layer.var_w,
        "var_b": layer.var_b,
        "sigma_w2": layer.fan_in * layer.var_w,
        "valid_frac": valid_fraction(op),
        "numel": numel,
        "q": layer.q,
        "approx": layer.approx,
        "act": " -> ".join(layer.labels) if depth < len(layers) - 1 else "",
        "chi": float(chi_l),
        "chi_unit": float(chi_l) * numel / prev_numel,
    }


def summarize_profile(frame: pd.DataFrame) -> dict[str, float]:
    """Summary of a predicted profile.

    ``decades_per_layer``: least-squares slope of log10 predicted ||dL/dh|| against depth
    (positive when the gradient shrinks toward the input); ``first_to_last``: predicted
    ||dL/dh|| at the first layer over the last; ``chi_geomean``: geometric mean of chi.
    """
    chis = frame["chi"].to_numpy()[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        geo = float(np.exp(np.mean(np.log(chis)))) if len(chis) else math.nan
    return {
        "decades_per_layer": slope(frame["depth"].to_numpy(), frame["pred_log10"].to_numpy()),
        "first_to_last": float(frame["pred_rel"].iloc[0]),
        "chi_geomean": geo,
        "num_layers": int(len(frame)),
    }


def predicted_decay(
    spec: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: tuple[int, ...] | None = None,
    seed: int = 0,
    input_second_moment: float = 1.0,
) -> dict[str, Any]:
    """Build a model spec with the model zoo (after ``torch.manual_seed(seed)``) and predict it.

    Returns :func:`summarize_profile`'s dict plus ``spec`` and ``profile`` (the frame of
    :func:`predict_profile`). ``input_size`` defaults to the model's native input size
    (3x32x32 for CIFAR-style nets and MLPs, 3x224x224 with the ImageNet stem).
    """
    torch.manual_seed(seed)
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    size = tuple(input_size) if input_size is not None else native_input_size(spec, in_channels)
    frame = predict_profile(model, size, input_second_moment=input_second_moment)
    return {"spec": spec, **frame.attrs, "profile": frame}
