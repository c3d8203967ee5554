"""Weight initialisation schemes selected by the ``init=`` switch.

``default`` applies nothing: every layer keeps what its constructor gave it (PyTorch's
``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in)), and a uniform bias). Every other
scheme sets the weight of every convolution and linear layer (the classifier included) and
sets their biases to 0. Kaiming schemes use ReLU's gain sqrt(2) whatever the activation, so
``init=kaiming_normal_fan_in`` always means std = sqrt(2 / fan_in). Norm layers always start
at weight 1, bias 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

_Init = Callable[[torch.Tensor], object]

# canonical scheme name -> in-place initialiser of one weight tensor
SCHEMES: dict[str, _Init | None] = {
    "default": None,
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform_fan_in": lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu"),
    "kaiming_uniform_fan_out": lambda w: nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"),
    "kaiming_normal_fan_in": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
    "kaiming_normal_fan_out": lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
    "orthogonal": nn.init.orthogonal_,
}

# accepted spellings -> canonical name
ALIASES: dict[str, str] = {
    "xavier": "xavier_uniform",
    "glorot": "xavier_uniform",
    "glorot_uniform": "xavier_uniform",
    "glorot_normal": "xavier_normal",
    "kaiming": "kaiming_normal_fan_in",
    "he": "kaiming_normal_fan_in",
    "kaiming_normal": "kaiming_normal_fan_in",
    "kaiming_uniform": "kaiming_uniform_fan_in",
}

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def parse_init(value: str) -> str:
    """Return the canonical spelling of an ``init=`` value; ``ValueError`` names the valid ones."""
    value = value.strip().lower()
    if value == "normal" or value.startswith("normal:"):
        std_text = value[len("normal:"):]
        if not std_text:
            raise ValueError("init=normal needs a standard deviation, e.g. init=normal:0.01")
        try:
            std = float(std_text)
        except ValueError:
            raise ValueError(
                f"init=normal:{std_text}: the standard deviation must be a number, e.g. normal:0.01") from None
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"init=normal:{std_text}: the standard deviation must be positive and finite")
        return f"normal:{std!r}"
    value = ALIASES.get(value, value)
    if value not in SCHEMES:
        raise ValueError(f"init={value} is not valid: choose one of {', '.join(SCHEMES)} or normal:STD")
    return value


def _initialiser(scheme: str) -> _Init | None:
    if scheme.startswith("normal:"):
        std = float(scheme.split(":", 1)[1])
        return lambda w: nn.init.normal_(w, 0.0, std)
    return SCHEMES[scheme]


@torch.no_grad()
def apply_init(model: nn.Module, scheme: str, zero_init_residual: bool = False) -> None:
    """Initialise ``model`` in place with a canonical ``scheme`` (see :func:`parse_init`).

    With ``zero_init_residual``, the last norm gain of every residual branch (a block's
    ``last_norm``) starts at 0, so each residual block starts as its shortcut.
    """
    init = _initialiser(scheme)
    for module in model.modules():
        if isinstance(module, _WEIGHTED) and init is not None:
            init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_residual:
        for module in model.modules():
            norm = getattr(module, "last_norm", None)
            if getattr(module, "residual", False) and norm is not None:
                nn.init.zeros_(norm.weight)
