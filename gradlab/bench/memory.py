"""What an object (a recorder) holds in memory, counted by walking it rather than by asking it.

The walk is independent of the figures the recorder reports about itself, so the benchmark can
check them: it follows attributes, containers, bound methods and closures (hooks), counts each
tensor storage once, and leaves out what belongs to the model.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

#: Objects a recorder refers to but does not own: the model, its optimiser, classes, modules.
_SKIP_TYPES: tuple[type, ...] = (nn.Module, torch.optim.Optimizer, type, type(sys), RemovableHandle)


def held_bytes(obj: Any, device: torch.device, exclude: Iterable[torch.Tensor] = ()) -> dict[str, int]:
    """Bytes an object (a recorder) holds, walking its attributes, containers and closures.

    Returns ``{"device": ..., "host": ...}``: tensor storage on ``device`` (counted once per
    storage), and everything else (tensors elsewhere, NumPy arrays, pandas frames, Python
    scalars and containers). Modules, optimisers and the tensors in ``exclude`` (the model's
    parameters and gradients) are not the recorder's and are not counted. On a CPU run the
    device is the host: its buffers then count as ``device``.
    """
    tensors = _TensorCount(device, exclude)
    seen: set[int] = set()
    totals = {"device": 0, "host": 0}
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            tensors.add(item, totals)
        elif isinstance(item, np.ndarray):
            stack.extend(_array_parts(item, totals))
        elif not isinstance(item, _SKIP_TYPES):
            stack.extend(_object_parts(item, totals))
    return totals


class _TensorCount:
    """Counts each tensor storage once, on the device or the host, skipping the model's own."""

    def __init__(self, device: torch.device, exclude: Iterable[torch.Tensor]) -> None:
        self.device = device
        self.skip_ptrs = {t.untyped_storage().data_ptr() for t in exclude
                          if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        self.storages: set[tuple[str, int]] = set()

    def add(self, tensor: torch.Tensor, totals: dict[str, int]) -> None:
        if isinstance(tensor, nn.Parameter) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if storage.data_ptr() in self.skip_ptrs or key in self.storages:
            return
        self.storages.add(key)
        same = tensor.device.type == self.device.type and (
            self.device.index is None or tensor.device.index in (None, self.device.index))
        totals["device" if same else "host"] += storage.nbytes()


def _array_parts(array: np.ndarray, totals: dict[str, int]) -> list[Any]:
    """Count a NumPy array's own buffer; return what it refers to (the array it views, objects)."""
    parts: list[Any] = []
    if array.base is None:
        totals["host"] += array.nbytes
    else:
        parts.append(array.base)  # a view: count the array it views, once
    if array.dtype == object:
        parts.extend(array.ravel().tolist())
    return parts


def _object_parts(item: Any, totals: dict[str, int]) -> list[Any]:
    """Count a Python object's own size (a pandas object's whole); return what it refers to."""
    if type(item).__module__.startswith("pandas"):
        if hasattr(item, "memory_usage"):
            usage = item.memory_usage(deep=True)
            totals["host"] += int(usage.sum() if hasattr(usage, "sum") else usage)
        return []
    totals["host"] += sys.getsizeof(item)
    return _referents(item)


def _referents(item: Any) -> list[Any]:
    """The objects ``item`` holds: container items, a bound method's owner, a closure's cells."""
    if isinstance(item, dict):
        return [*item.keys(), *item.values()]
    if isinstance(item, (list, tuple, set, frozenset, deque)):
        return list(item)
    if hasattr(item, "__self__") and hasattr(item, "__func__"):  # a bound method (a hook)
        return [item.__self__]
    if callable(item) and hasattr(item, "__closure__"):  # a closure (a hook)
        cells = []
        for cell in item.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                cells.append(cell.cell_contents)
        return cells
    # any other object: what its attributes hold
    held = list(vars(item).values()) if hasattr(item, "__dict__") else []
    held += [getattr(item, slot, None) for slot in getattr(type(item), "__slots__", ())]
    return held
