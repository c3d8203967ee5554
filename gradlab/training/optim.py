"""Optimisers and learning-rate schedules, chosen by name.

Schedules are written as strings so that the CLI and experiment files share one syntax:

- ``constant``;
- ``step:32000,48000`` (divide the rate by 10 at each listed step; ``step:32000,48000@0.1``
  names the factor);
- ``cosine`` (from the base rate to 0 over the run).

A linear warm-up of ``warmup_steps`` steps can precede any of them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gradlab.errors import GradlabError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step:M1,M2[@FACTOR]", "cosine")


def make_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Build an optimiser over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if lr <= 0 or not math.isfinite(lr):
        raise GradlabError(f"learning rate must be a positive number, got {lr}: pass e.g. --lr 0.1")
    if weight_decay < 0:
        raise GradlabError(f"weight decay must be >= 0, got {weight_decay}")
    key = name.lower()
    if key == "sgd":
        if nesterov and momentum <= 0:
            raise GradlabError("Nesterov momentum needs momentum > 0: pass --momentum 0.9")
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise GradlabError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def lr_factor_fn(schedule: str, total_steps: int, warmup_steps: int = 0):
    """Return ``f(step) -> factor`` for ``LambdaLR``, validating the schedule string."""
    if warmup_steps < 0:
        raise GradlabError(f"warm-up steps must be >= 0, got {warmup_steps}")
    text = schedule.strip().lower()
    if text == "constant":

        def base(step: int) -> float:
            return 1.0

    elif text == "cosine":

        def base(step: int) -> float:
            span = max(total_steps - warmup_steps, 1)
            t = min(max(step - warmup_steps, 0) / span, 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * t))

    elif text.startswith("step:"):
        body = text[len("step:"):]
        factor = 0.1
        if "@" in body:
            body, _, factor_text = body.partition("@")
            factor = _number(factor_text, schedule)
        try:
            milestones = sorted(int(m) for m in body.split(",") if m.strip())
        except ValueError:
            milestones = []
        if not milestones or any(m <= 0 for m in milestones):
            raise GradlabError(
                f"bad schedule {schedule!r}: write step:M1,M2 with positive step numbers, e.g. step:32000,48000"
            )

        def base(step: int) -> float:
            return factor ** sum(step >= m for m in milestones)

    else:
        raise GradlabError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")

    def factor_at(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return base(step) * (step + 1) / warmup_steps
        return base(step)

    return factor_at


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler (call ``.step()`` after each optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor_fn(schedule, total_steps, warmup_steps)
    )


def _number(text: str, schedule: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # A factor <= 0 would make the learning rate zero or negative after the first milestone.
    if not (math.isfinite(value) and value > 0):
        raise GradlabError(f"bad factor in schedule {schedule!r}: write a positive number, e.g. "
                           "step:100,200@0.1")
    return value
