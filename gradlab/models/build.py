"""Turning a spec into a module: resolving classes and input channels, building, initialising."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.models import registry
from gradlab.models.init import apply_init
from gradlab.models.spec import TV_PREFIX, ModelSpec, parse_spec
from gradlab.models.tv import build_tv, tv_input_size


def _count(value: Any, argument: str) -> int | None:
    if value is None:
        return None
    try:
        count = operator.index(value)
    except TypeError:
        count = 0
    if isinstance(value, bool) or count < 1:
        raise GradlabError(f"{argument} must be a positive integer, got {value!r}")
    return count


def _resolve(spec: ModelSpec, key: str, value: int | None, argument: str) -> int:
    """A count given both in the spec and as an argument must agree; the argument wins a default."""
    if value is None:
        return int(spec.resolved()[key]) if key in spec.defaults else 3
    if key in spec.options and spec.options[key] != value:
        raise GradlabError(
            f"model spec {str(spec)!r} says {key}={spec.options[key]} but {argument}={value} was asked for: "
            f"drop {key}= from the spec"
        )
    return int(value)


def resolve_options(spec: str | ModelSpec, num_classes: int | None = None,
                    in_channels: int | None = None) -> tuple[ModelSpec, dict[str, Any]]:
    """The parsed spec and every option with its final value (classes and channels settled)."""
    parsed = parse_spec(spec)
    num_classes = _count(num_classes, "num_classes")
    in_channels = _count(in_channels, "in_channels")
    options = parsed.resolved()
    options["classes"] = _resolve(parsed, "classes", num_classes, "num_classes")
    options["in_channels"] = _resolve(parsed, "in_channels", in_channels, "in_channels")
    return parsed, options


def _construct(parsed: ModelSpec, options: dict[str, Any]) -> nn.Module:
    if parsed.family == "torchvision":
        return build_tv(parsed.name[len(TV_PREFIX):], options["classes"], options["in_channels"])
    entry = registry.lookup(parsed.name)
    assert entry is not None  # parse_spec refused unknown names
    return entry.build(options)


def build_model(spec: str | ModelSpec, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """Build the network a spec names, e.g. ``build_model("plain34:act=sigmoid,norm=none", num_classes=10)``.

    ``num_classes`` and ``in_channels`` override the model's defaults (1000 classes for
    ImageNet-style nets, 10 for CIFAR-style nets and MLPs; 3 channels); a spec that sets them
    to something else is refused. Parameters are created on the current default device and
    initialised as the spec's ``init``/``zero_init_residual`` say.
    """
    parsed, options = resolve_options(spec, num_classes, in_channels)
    model = _construct(parsed, options)
    if parsed.family != "torchvision":
        apply_init(model, options["init"], options.get("zero_init_residual", False))
    return model


def build_meta(spec: str | ModelSpec, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """The same network on the ``meta`` device: shapes without memory, for counting."""
    parsed, options = resolve_options(spec, num_classes, in_channels)
    with torch.device("meta"):
        return _construct(parsed, options)


def native_input_size(spec: str | ModelSpec, in_channels: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) a model is designed for: 224x224 with the ImageNet stem, 32x32 otherwise."""
    parsed, options = resolve_options(spec, None, in_channels)
    channels = options["in_channels"]
    if parsed.family == "torchvision":
        return tv_input_size(parsed.name[len(TV_PREFIX):], channels)
    if parsed.family == "mlp":
        return (channels, options["size"], options["size"])
    side = 224 if options["stem"] == "imagenet" else 32
    return (channels, side, side)
