"""The recorder's argument checks: each bad argument gets a one-line error naming the fix."""

from __future__ import annotations

import numbers
from typing import Any

from torch import nn

from gradlab.errors import GradlabError


def check_model(model: Any) -> None:
    """A one-line error unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise GradlabError(
            f"GradientRecorder needs a torch.nn.Module, got {type(model).__name__}: "
            "pass the model itself, e.g. GradientRecorder(model)"
        )


def check_capacity(capacity: Any) -> None:
    """A one-line error unless ``capacity`` (recorded steps held on the device) is a positive int."""
    if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity <= 0:
        raise GradlabError(f"capacity must be a positive int, got {capacity!r}: pass e.g. capacity=64")


def check_scaler(scaler: Any) -> None:
    """A one-line error unless ``scaler`` is None or a GradScaler."""
    if scaler is not None and not hasattr(scaler, "get_scale"):
        raise GradlabError(
            f"scaler= must be a torch.amp.GradScaler, got {type(scaler).__name__}: "
            "pass the loop's scaler or leave it out"
        )
