"""Deep fully connected networks (``mlpN``), for the classic sigmoid and initialisation demos.

``mlpN`` has N linear layers: N-1 hidden blocks ``layers.i`` (``linear``, optional ``bn``,
``act``) of equal width and the classifier ``fc``. The input image is flattened first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.models.layers import ActFactory


class MLPBlock(nn.Module):
    """Linear layer, optional 1-d norm, activation."""

    def __init__(self, in_features: int, out_features: int, norm_layer: type[nn.Module] | None,
                 act_layer: ActFactory) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=norm_layer is None)
        self.bn = norm_layer(out_features) if norm_layer is not None else None
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class MLP(nn.Module):
    """``depth`` linear layers of ``width`` units on a flattened ``input_shape`` (C, H, W)."""

    def __init__(
        self,
        depth: int,
        width: int,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        norm_layer: type[nn.Module] | None = nn.BatchNorm1d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError("an MLP needs at least one layer")
        self.input_shape = tuple(input_shape)
        self.in_features = math.prod(self.input_shape)
        self.flatten = nn.Flatten()
        sizes = [self.in_features] + [width] * (depth - 1)
        self.layers = nn.Sequential(
            *[MLPBlock(sizes[i], sizes[i + 1], norm_layer, act_layer) for i in range(depth - 1)]
        )
        self.fc = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if math.prod(x.shape[1:]) != self.in_features:
            shape = "x".join(str(s) for s in self.input_shape)
            got = "x".join(str(s) for s in x.shape[1:])
            raise GradlabError(
                f"this MLP takes {shape} inputs ({self.in_features} features), got {got}: "
                "build it with matching in_channels= and size="
            )
        return self.fc(self.layers(self.flatten(x)))
