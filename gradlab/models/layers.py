"""Small building pieces shared by the networks: convolutions, activations, the option-A shortcut.

Activations and norms are passed around as zero-/one-argument factories, so each position in a
network gets its own module instance (a recorder attaches to modules, so a shared ``ReLU``
would mix the statistics of every place it is used).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

ActFactory = Callable[[], nn.Module]
NormFactory = Callable[[int], nn.Module]

# canonical activation name -> factory of a fresh module; none of them in-place, so hooks and
# autograd always see the tensor a layer produced.
ACTIVATIONS: dict[str, ActFactory] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": partial(nn.LeakyReLU, 0.01),
    "identity": nn.Identity,
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (channel mixing, optionally strided)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=bias)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut of the ResNet paper: subsample by ``stride`` and append zero channels.

    It has no parameters, so a residual net with it has exactly its plain twin's count.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"zero-padding cannot shrink {in_planes} channels to {out_planes}")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            # Same output size as a padded stride-s 3x3 convolution: ceil(H / s).
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back)
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"
