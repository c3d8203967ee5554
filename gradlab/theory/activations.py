"""The activations the mean-field prediction knows by name, and how a name or callable resolves."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from gradlab.errors import GradlabError

Activation = str | Callable[[torch.Tensor], torch.Tensor]

# The named activations the model zoo offers ("linear" and "none" are spellings of identity).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "identity": lambda t: t,
}
_ALIASES = {"linear": "identity", "none": "identity"}


def resolve(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function for a name of :data:`ACTIVATIONS`, an alias, ``leaky_relu:SLOPE``
    or a callable (returned as it is)."""
    if callable(activation):
        return activation
    if not isinstance(activation, str):
        raise GradlabError(f"activation must be a name or a callable, got {type(activation).__name__}")
    name = activation.strip().lower()
    name = _ALIASES.get(name, name)
    if name.startswith("leaky_relu:"):  # "leaky_relu:0.2" sets the negative slope
        try:
            slope = float(name.split(":", 1)[1])
        except ValueError:
            raise GradlabError(f"bad leaky_relu slope in {activation!r}: write e.g. leaky_relu:0.2") from None
        return lambda t: F.leaky_relu(t, slope)
    if name not in ACTIVATIONS:
        valid = ", ".join([*ACTIVATIONS, *_ALIASES])
        raise GradlabError(f"unknown activation {activation!r}: use one of {valid}, or pass a callable")
    return ACTIVATIONS[name]
