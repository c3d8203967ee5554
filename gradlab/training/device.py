"""The one place a device name (``auto``, ``cpu``, ``cuda:1``) becomes a torch device."""

from __future__ import annotations

import platform

import torch

from gradlab.errors import GradlabError


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when available, else the CPU; anything else must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GradlabError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradlabError(f"device {name!r} asked for but CUDA is not available: use --device cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    """What a run's meta says it ran on: the GPU's name, or the CPU's."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"
