"""Which modules are layers, what parameters each one covers, and the model behind wrappers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gradlab.errors import GradlabError
from gradlab.recorder.metrics import ACTIVATIONS, NORMS, activation_kind

ROOT_NAME = "(root)"  # the name of the model itself when it is a layer (e.g. a bare nn.Linear)

#: What ``layers=`` accepts: None, a name or list of names, a module type or tuple of types,
#: or a predicate ``(name, module) -> bool``.
LayerSelection = Any


@dataclass
class Layer:
    """One recorded module."""

    index: int  # slot in every per-layer vector, fixed at construction
    name: str
    module: nn.Module
    params: list[nn.Parameter]  # the parameters its grad_norm and weight_norm cover
    kind: str | None  # 'relu' | 'sigmoid' | 'tanh' | None (see metrics.activation_kind)
    recurse: bool  # covers every parameter beneath it (selected) or only its own (default)
    depth: int = -1  # forward execution order, set once the first forward was seen
    num_params: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_params = sum(p.numel() for p in self.params)

    @property
    def type(self) -> str:
        name = type(self.module).__name__
        # fully_shard swaps in a class FSDP<Name> derived from the original: report the original
        if name.startswith("FSDP") and any(c.__name__ == name[4:] for c in type(self.module).__mro__[1:]):
            return name[4:]
        return name


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / torch.compile wrappers (names then match)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    for _ in range(8):
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        else:
            break
    return model


def _owns_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _is_default_layer(module: nn.Module) -> bool:
    return _owns_params(module) or isinstance(module, ACTIVATIONS + NORMS)


def select_layers(model: nn.Module, layers: LayerSelection) -> list[Layer]:
    """The layers of ``model`` (already unwrapped) for a ``layers=`` argument.

    Default (``None``): every module that owns parameters directly, plus activation and
    normalisation modules; a default layer covers the parameters it owns directly. A selection
    (names, a type or tuple of types, or a predicate ``(name, module) -> bool``) picks any
    modules; a selected layer covers every parameter beneath it.
    """
    named = [(n or ROOT_NAME, m) for n, m in model.named_modules()]
    if layers is None:
        chosen = [(n, m) for n, m in named if _is_default_layer(m)]
        recurse = False
        if not chosen:
            raise GradlabError(
                "the model has no parameters and no activation modules to record: "
                "pass layers= to choose modules"
            )
    else:
        chosen = _match(named, layers)
        recurse = True
    return [
        Layer(i, n, m, list(m.parameters(recurse=recurse)), activation_kind(m), recurse)
        for i, (n, m) in enumerate(chosen)
    ]


def _match(named: list[tuple[str, nn.Module]], layers: Any) -> list[tuple[str, nn.Module]]:
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)
    ):
        if not all(issubclass(t, nn.Module) for t in (layers if isinstance(layers, tuple) else (layers,))):
            raise GradlabError(
                "layers= types must be nn.Module subclasses: pass e.g. layers=(nn.Conv2d, nn.Linear)"
            )
        chosen = [(n, m) for n, m in named if isinstance(m, layers)]
        what = f"modules of type {layers!r}"
    elif callable(layers) and not isinstance(layers, (str, list, tuple)):
        chosen = [(n, m) for n, m in named if layers(n, m)]
        what = "modules accepted by the predicate"
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        if not all(isinstance(n, str) for n in names):
            raise GradlabError(
                "layers= must be a list of module names, a module type or a predicate(name, module): "
                "pass e.g. layers=['layer1.0', 'fc']"
            )
        by_name = dict(named)
        missing = [n for n in names if n not in by_name]
        if missing:
            known = ", ".join(n for n, _ in named[1:6])
            raise GradlabError(
                f"layers= names {', '.join(map(repr, missing))} match no module of the model: "
                f"use qualified names from model.named_modules(), e.g. {known}"
            )
        wanted = set(names)
        chosen = [(n, m) for n, m in named if n in wanted]
        what = "modules"
    if not chosen:
        raise GradlabError(
            f"layers= matched no {what}: pass module names from model.named_modules(), "
            "a module type, or a predicate(name, module) that accepts some"
        )
    return chosen
