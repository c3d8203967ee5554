"""The model zoo: every name a spec may use, with its options, defaults and builder.

Entries are registered once; registering a name twice is a programming error and raises.
``mlpN`` is a pattern (any N >= 1) rather than a list of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gradlab.models.layers import ACTIVATIONS
from gradlab.models.mlp import MLP
from gradlab.models.resnet import BasicBlock, Bottleneck, ResNet

Builder = Callable[[dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class ZooEntry:
    """One model name: what it is, which options it takes (with defaults), and how to build it."""

    name: str
    family: str  # imagenet | cifar | mlp
    defaults: dict[str, Any]  # every option this name accepts -> its default
    build: Builder = field(repr=False)  # resolved options -> module (default init)
    residual: bool | None = None  # None for MLPs
    paper_gmacs: float | None = None  # ResNet paper, Table 1
    twin: str | None = None  # the residual/plain counterpart


_ZOO: dict[str, ZooEntry] = {}
_MLP_PATTERN = re.compile(r"mlp(\d+)")
MLP_EXAMPLES = ("mlp10", "mlp30")


def register(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo; a name may be registered once."""
    if entry.name in _ZOO or _MLP_PATTERN.fullmatch(entry.name):
        raise ValueError(f"model name {entry.name!r} is already registered")
    _ZOO[entry.name] = entry
    return entry


def _norm2d(options: dict[str, Any]) -> type[nn.Module] | None:
    return nn.BatchNorm2d if options["norm"] == "batch" else None


def _resnet_builder(block: type, layers: list[int], stages: int, residual: bool) -> Builder:
    def build(o: dict[str, Any]) -> nn.Module:
        return ResNet(
            block,
            layers,
            [o["width"] * 2**i for i in range(stages)],
            residual=residual,
            stem=o["stem"],
            shortcut=o.get("shortcut", "projection"),
            in_channels=o["in_channels"],
            num_classes=o["classes"],
            norm_layer=_norm2d(o),
            act_layer=ACTIVATIONS[o["act"]],
        )

    return build


_COMMON = {"act": "relu", "norm": "batch", "init": "default"}
_RESIDUAL_ONLY = {"zero_init_residual": False}

# ResNet paper, Table 1: depth -> (block, blocks per stage, GMACs at 224x224)
_IMAGENET = {
    18: (BasicBlock, [2, 2, 2, 2], 1.8),
    34: (BasicBlock, [3, 4, 6, 3], 3.6),
    50: (Bottleneck, [3, 4, 6, 3], 3.8),
    101: (Bottleneck, [3, 4, 23, 3], 7.6),
    152: (Bottleneck, [3, 8, 36, 3], 11.3),
}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2


def _register_pair(depth: int, family: str, block: type, layers: list[int], stages: int,
                   defaults: dict[str, Any], paper: float | None) -> None:
    plain, res = f"plain{depth}", f"resnet{depth}"
    register(ZooEntry(res, family, _COMMON | _RESIDUAL_ONLY | defaults,
                      _resnet_builder(block, layers, stages, True), True, paper, plain))
    no_shortcut = {k: v for k, v in defaults.items() if k != "shortcut"}
    register(ZooEntry(plain, family, _COMMON | no_shortcut,
                      _resnet_builder(block, layers, stages, False), False, None, res))


for _depth, (_block, _layers, _gmacs) in _IMAGENET.items():
    _register_pair(_depth, "imagenet", _block, _layers, 4,
                   {"shortcut": "projection", "width": 64, "stem": "imagenet", "in_channels": 3, "classes": 1000},
                   _gmacs)
for _depth in _CIFAR_DEPTHS:
    _n = (_depth - 2) // 6
    _register_pair(_depth, "cifar", BasicBlock, [_n] * 3, 3,
                   {"shortcut": "zeropad", "width": 16, "stem": "cifar", "in_channels": 3, "classes": 10},
                   None)


def _mlp_entry(name: str, depth: int) -> ZooEntry:
    def build(o: dict[str, Any]) -> nn.Module:
        return MLP(depth, o["width"], (o["in_channels"], o["size"], o["size"]), o["classes"],
                   norm_layer=nn.BatchNorm1d if o["norm"] == "batch" else None,
                   act_layer=ACTIVATIONS[o["act"]])

    defaults = _COMMON | {"width": 256, "size": 32, "in_channels": 3, "classes": 10}
    return ZooEntry(name, "mlp", defaults, build)


def lookup(name: str) -> ZooEntry | None:
    """The entry for a (lower-case) model name, or None."""
    entry = _ZOO.get(name)
    if entry is not None:
        return entry
    match = _MLP_PATTERN.fullmatch(name)
    if match and int(match.group(1)) >= 1:
        return _mlp_entry(name, int(match.group(1)))
    return None


def list_models() -> list[str]:
    """Every registered name, in registry order, plus representatives of ``mlpN``."""
    return [*_ZOO, *MLP_EXAMPLES]
