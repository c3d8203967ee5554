"""One arm of the benchmark, and the helpers the timing loop needs around it.

An arm is a model copy, its optimiser and what runs after ``backward()``. Beside it: device
synchronisation, dynamo's counters, classes of its own for a compiled copy, and the count of
values a recorder returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from gradlab.bench.config import RECORDER


class Arm:
    """A model, its optimiser, and what runs after ``backward()``: one thing being timed."""

    def __init__(self, name: str, kind: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 trained: Callable[..., Any], metrics: str | None = None, every: int = 1) -> None:
        self.name, self.kind, self.metrics, self.every = name, kind, metrics, every
        # ``trained`` is what the step calls: the model itself, or torch.compile(model).
        self.model, self.optimizer, self.trained = model, optimizer, trained
        self.recorder: Any = None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.after_backward: Callable[[], Any] = lambda: None
        self.last: Any = None  # what an alternative produced, kept like a logger keeps it
        self.count = 0
        self.times: list[float] = []
        self.phases: list[int] = []
        self.rounds: list[float] = []
        self.compiler = {"graph_breaks": 0, "unique_graphs": 0, "graphs_while_timed": 0}
        self.scaler: torch.amp.GradScaler | None = None

    @property
    def period(self) -> int:
        return self.every if self.kind == RECORDER else 1


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits until ``device`` is idle (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def graph_counters() -> tuple[int, int]:
    """(graph breaks, unique graphs) counted by dynamo so far in this process."""
    try:  # torch's private module, imported here so that a torch without dynamo still benches
        from torch._dynamo.utils import counters
    except Exception:  # pragma: no cover - a torch without dynamo
        return 0, 0
    return sum(counters["graph_break"].values()), int(counters["stats"].get("unique_graphs", 0))


def own_classes(model: nn.Module) -> None:
    """Give every module of ``model`` a class of its own (a subclass with the same name).

    dynamo shares compiled code between instances of one class and, by default, does not
    guard on module hooks, so a second copy of a model would silently run the graph traced
    for the first one: the recorder arm would run the bare arm's graph without its hooks, or
    another recorder's hooks. Classes of its own give each arm its own compiled graphs, each
    traced with the arm's own hooks.
    """
    made: dict[type, type] = {}
    for module in model.modules():
        cls = type(module)
        if cls not in made:
            made[cls] = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        module.__class__ = made[cls]


def recorded_values(recorder: Any) -> int:
    """Values a recorder returns: rows of its layer frame plus rows of its step frame."""
    n = len(recorder.to_frame())
    if hasattr(recorder, "step_frame"):
        n += len(recorder.step_frame())
    return n



def keeping(arm: Arm, alternative: Callable[[Iterable[torch.Tensor]], Any]) -> Callable[[], None]:
    """What runs after ``backward()`` for an alternative: compute it, keep the result as a logger would."""

    def after_backward() -> None:
        arm.last = alternative(arm.params)

    return after_backward
