"""gradlab: gradient-flow diagnostics for PyTorch.

The public API is small and imported lazily, so that ``import gradlab.report`` (which
only reads stored tables) works on a machine without torch:

- :class:`GradientRecorder` records per-layer gradient and activation statistics in any loop;
- :func:`build_model` builds a network of the model zoo from a spec string;
- :func:`load_run` reads a run directory written by the trainer.
"""

from __future__ import annotations

from typing import Any

from gradlab._version import __version__

# Name -> (module, attribute). Resolved on first access (PEP 562).
_LAZY = {
    "GradientRecorder": ("gradlab.recorder", "GradientRecorder"),
    "build_model": ("gradlab.models", "build_model"),
    "load_run": ("gradlab.store", "load_run"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
