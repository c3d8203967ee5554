"""What a model is, in numbers: parameters, multiply-adds, depth and its layers.

Models are built on the ``meta`` device, so describing ResNet-152 allocates nothing and costs
about as much as constructing its modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from torch import nn

from gradlab.models import registry
from gradlab.models.build import build_meta, build_model, native_input_size, resolve_options
from gradlab.models.macs import trace_layers
from gradlab.models.spec import ModelSpec


def main_path_depth(model: nn.Module) -> int:
    """Convolution and linear layers, not counting projection shortcuts (``downsample``)."""
    return sum(
        1
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and "downsample" not in name.split(".")
    )


def describe_model(
    spec: str | ModelSpec,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A model's figures: ``name`` (canonical spec), ``family``, ``options`` (all, resolved),
    ``classes``, ``input_size`` (C, H, W; native unless given), ``params``, ``macs`` (per
    sample at ``input_size``), ``depth`` (weighted layers on the main path), ``paper_gmacs``
    (ResNet paper, ImageNet ResNets only) and ``layers`` (leaf modules in forward order: name,
    type, output_shape, params, macs).
    """
    parsed, options = resolve_options(spec, num_classes, in_channels)
    size = tuple(input_size) if input_size is not None else native_input_size(parsed, options["in_channels"])
    try:
        model = build_meta(parsed, options["classes"], options["in_channels"])
        layers = trace_layers(model, size)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on the CPU
        model = build_model(parsed, options["classes"], options["in_channels"])
        layers = trace_layers(model, size)
    entry = registry.lookup(parsed.name)
    return {
        "name": str(parsed),
        "family": parsed.family,
        "options": options,
        "classes": options["classes"],
        "input_size": list(size),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(layer.macs for layer in layers),
        "depth": main_path_depth(model),
        "paper_gmacs": entry.paper_gmacs if entry is not None else None,
        "layers": [asdict(layer) | {"output_shape": list(layer.output_shape)} for layer in layers],
    }


def zoo_rows(num_classes: int | None = None) -> list[dict[str, Any]]:
    """One summary row per name of :func:`list_models` (``describe_model`` without layers)."""
    rows = []
    for name in registry.list_models():
        info = describe_model(name, num_classes=num_classes)
        info.pop("layers")
        info.pop("options")
        rows.append(info)
    return rows
