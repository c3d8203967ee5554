"""What the framework callbacks share: the recorder's settings, labels found in a batch."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradlab.recorder import GradientRecorder


@dataclass
class RecorderSettings:
    """Where the run goes and what the recorder records (the callbacks' arguments)."""

    out: str | os.PathLike[str] = "runs/gradlab"  # the run directory written
    every: int | Callable[[int], bool] = 10
    metrics: Any = None  # None (the default set), "all", or a list of metric names
    layers: Any = None
    flush_every: int = 100  # optimizer steps between writes of the run directory
    report: str | os.PathLike[str] | None = None  # an HTML report written at the end, if given
    overwrite: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def recorder(self, model: torch.nn.Module) -> GradientRecorder:
        return GradientRecorder(model, every=self.every, metrics=self.metrics, layers=self.layers)

    @property
    def path(self) -> Path:
        return Path(self.out)


def labels_in(batch: Any) -> torch.Tensor | None:
    """A batch's class labels, where it plainly has them: ``(x, y)`` with a 1-d integer ``y``,
    or a dict with a 1-d integer ``labels`` / ``label``. Token labels (2-d) are not class labels."""
    y = None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        y = batch[1]
    elif isinstance(batch, dict) or hasattr(batch, "keys"):
        for key in ("labels", "label"):
            if key in batch:
                y = batch[key]
                break
    if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point() and not y.is_complex():
        return y
    return None
