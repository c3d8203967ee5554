"""A user's own model factory, named as ``package.module:function`` (as console entry points are).

``gradlab probe mypkg.models:make_net`` imports ``mypkg.models`` (from the current directory
or ``PYTHONPATH``) and calls ``make_net``. The factory may accept ``num_classes`` and
``in_channels`` (passed when its signature names them) and returns either

- an ``nn.Module``: probed on a batch of ``--data`` (images, integer class labels), or
- ``(model, inputs, targets)``: probed on that batch. ``inputs`` is passed as ``model(inputs)``,
  or as ``model(**inputs)`` when it is a dict; the loss is the output's own ``loss`` (a
  Hugging Face model given ``labels``) when ``targets`` is None, else the cross-entropy of the
  output's logits against ``targets`` (token-level for ``(B, T, V)`` logits).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradlab.errors import GradlabError, first_line
from gradlab.models import registry

_FACTORY = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_]\w*)$")


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names a user's factory (``module.path:function``), not a zoo model.

    A zoo spec's options always hold ``=`` (``mlp4:norm=none``) and torchvision names start
    with ``tv:``, so ``name:identifier`` is a factory unless its left side is a zoo name.
    """
    if spec.startswith("tv:"):
        return False
    match = _FACTORY.match(spec.strip())
    if match is None:
        return False
    return registry.lookup(match.group(1)) is None


@dataclass
class Built:
    """A factory's model, and its own batch when it gave one."""

    model: nn.Module
    inputs: Any = None
    targets: torch.Tensor | None = None

    @property
    def has_batch(self) -> bool:
        return self.inputs is not None


def build_from_factory(spec: str, *, num_classes: int, in_channels: int) -> Built:
    """Imports and calls the factory ``spec`` names; one-line GradlabErrors for every failure."""
    match = _FACTORY.match(spec.strip())
    if match is None:
        raise GradlabError(f"{spec!r} is not a factory name: write it as package.module:function")
    module_name, func_name = match.groups()
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` would have it
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise GradlabError(
            f"cannot import {module_name!r} for {spec} ({first_line(exc)}): run from the directory that "
            "holds it or add that directory to PYTHONPATH"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise GradlabError(f"{module_name} has no function {func_name!r}: name a callable that returns the model")
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if name in params:
            kwargs[name] = value
    try:
        made = func(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise GradlabError(f"{spec}() failed: {first_line(exc)}; fix the factory or call it by hand first") from None
    if isinstance(made, nn.Module):
        return Built(made)
    if isinstance(made, tuple) and len(made) == 3 and isinstance(made[0], nn.Module):
        return Built(*made)
    raise GradlabError(
        f"{spec} returned {type(made).__name__}: return an nn.Module, or (model, inputs, targets)"
    )


def probe_loss(model: nn.Module, inputs: Any, targets: torch.Tensor | None) -> torch.Tensor:
    """The loss of one batch, as described in the module docstring."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    if targets is None:
        loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
        if not isinstance(loss, torch.Tensor):
            raise GradlabError("the model's output has no loss: return (model, inputs, targets) with targets, "
                               "or inputs that make the model compute its loss (e.g. labels=)")
        return loss.float()
    logits = out
    if not isinstance(logits, torch.Tensor):
        logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise GradlabError("the model's output holds no logits tensor to take the cross-entropy of")
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
