"""Residual networks and their plain twins, ImageNet-style (four stages) and CIFAR-style (6n+2).

One class covers all of them. Names of parameters and buffers are torchvision's, so that with
the defaults and 1000 classes ``resnet18..152`` load torchvision's state dicts unchanged. A
plain net is the same net with ``residual=False``: no addition and no shortcut module, every
other module named as in its twin. Each activation position is its own module: ``act1`` in the
stem and ``act1``/``act2`` (``act3`` in bottlenecks) in blocks, where the last one follows the
addition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from gradlab.models.layers import ActFactory, NormFactory, ZeroPadShortcut, conv1x1, conv3x3

ShortcutFactory = Callable[[], nn.Module]


def _maybe_norm(norm_layer: NormFactory | None, channels: int) -> nn.Module | None:
    return norm_layer(channels) if norm_layer is not None else None


def _apply(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return module(x) if module is not None else x


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: ShortcutFactory | None = None,
        *,
        residual: bool = True,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        bias = norm_layer is None  # a bias before a norm layer would be cancelled by it
        self.conv1 = conv3x3(inplanes, planes, stride, bias=bias)
        self.bn1 = _maybe_norm(norm_layer, planes)
        self.act1 = act_layer()
        self.conv2 = conv3x3(planes, planes, bias=bias)
        self.bn2 = _maybe_norm(norm_layer, planes)
        self.act2 = act_layer()
        self.residual = residual
        # Built last, so parameters are created in registration order (reproducible by seed).
        self.downsample = downsample() if (residual and downsample is not None) else None

    @property
    def last_norm(self) -> nn.Module | None:
        """The norm layer that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(_apply(self.bn1, self.conv1(x)))
        out = _apply(self.bn2, self.conv2(out))
        if self.residual:
            out = out + _apply(self.downsample, x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4): ResNet-50/101/152.

    The stride sits on the 3x3 convolution, as in torchvision ("v1.5"); parameter counts are
    the same as the paper's (stride on the first 1x1), multiply-adds about 7% higher for 50.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: ShortcutFactory | None = None,
        *,
        residual: bool = True,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        bias = norm_layer is None
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, planes, bias=bias)
        self.bn1 = _maybe_norm(norm_layer, planes)
        self.act1 = act_layer()
        self.conv2 = conv3x3(planes, planes, stride, bias=bias)
        self.bn2 = _maybe_norm(norm_layer, planes)
        self.act2 = act_layer()
        self.conv3 = conv1x1(planes, out_planes, bias=bias)
        self.bn3 = _maybe_norm(norm_layer, out_planes)
        self.act3 = act_layer()
        self.residual = residual
        self.downsample = downsample() if (residual and downsample is not None) else None

    @property
    def last_norm(self) -> nn.Module | None:
        """The norm layer that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(_apply(self.bn1, self.conv1(x)))
        out = self.act2(_apply(self.bn2, self.conv2(out)))
        out = _apply(self.bn3, self.conv3(out))
        if self.residual:
            out = out + _apply(self.downsample, x)
        return self.act3(out)


Block = type[BasicBlock | Bottleneck]


class ResNet(nn.Module):
    """A stem, stages of blocks, global average pooling and a linear classifier.

    ``widths`` gives each stage's planes (the first stage has stride 1, the others 2).
    ``stem`` is ``"imagenet"`` (7x7 stride-2 convolution and 3x3 stride-2 max-pool) or
    ``"cifar"`` (3x3 stride-1 convolution, no pooling). ``shortcut`` says what carries the
    input past a block whose shape changes: ``"projection"`` (1x1 convolution and norm, the
    paper's option B) or ``"zeropad"`` (option A, parameter-free). It is ignored when
    ``residual`` is false.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int],
        *,
        residual: bool = True,
        stem: str = "imagenet",
        shortcut: str = "projection",
        in_channels: int = 3,
        num_classes: int = 1000,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError("need one width per stage")
        if shortcut not in ("projection", "zeropad"):
            raise ValueError(f"unknown shortcut {shortcut!r}")
        self.residual, self.shortcut = residual, shortcut
        self._norm_layer, self._act_layer = norm_layer, act_layer
        self.inplanes = widths[0]
        bias = norm_layer is None
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=bias)
        elif stem == "cifar":
            self.conv1 = conv3x3(in_channels, self.inplanes, bias=bias)
        else:
            raise ValueError(f"unknown stem {stem!r}")
        self.bn1 = _maybe_norm(norm_layer, self.inplanes)
        self.act1 = act_layer()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else None
        self._stages: list[str] = []
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            stage = self._make_layer(block, planes, blocks, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
            self._stages.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _shortcut(self, inplanes: int, out_planes: int, stride: int) -> ShortcutFactory | None:
        if stride == 1 and inplanes == out_planes:
            return None  # the identity
        if self.shortcut == "zeropad":
            return partial(ZeroPadShortcut, inplanes, out_planes, stride)

        def projection() -> nn.Module:
            conv = conv1x1(inplanes, out_planes, stride, bias=self._norm_layer is None)
            norm = _maybe_norm(self._norm_layer, out_planes)
            return nn.Sequential(conv, norm) if norm is not None else nn.Sequential(conv)

        return projection

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        kwargs = dict(residual=self.residual, norm_layer=self._norm_layer, act_layer=self._act_layer)
        layers = [block(self.inplanes, planes, stride, self._shortcut(self.inplanes, out_planes, stride), **kwargs)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes, **kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def blocks(self) -> list[BasicBlock | Bottleneck]:
        """Every block, in forward order."""
        return [m for m in self.modules() if isinstance(m, (BasicBlock, Bottleneck))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(_apply(self.bn1, self.conv1(x)))
        x = _apply(self.maxpool, x)
        for name in self._stages:
            x = getattr(self, name)(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)
