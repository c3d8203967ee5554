"""The two common ways of watching gradients that the recorder is timed against.

Both run after ``backward()`` on the model's parameters, the way users write them: the forum
snippet (a norm and an ``.item()`` per parameter) and wandb's ``watch`` (a 64-bin histogram per
parameter, with its host syncs).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

HIST_BINS = 64


def item_norm_loop(params: Iterable[torch.Tensor]) -> list[float]:
    """Per-parameter gradient L2 norms the forum way: a norm and an ``.item()`` (a host sync) each.

    Parameters without a gradient are skipped.
    """
    return [float(p.grad.detach().norm().item()) for p in params if p.grad is not None]


def histc_loop(params: Iterable[torch.Tensor], bins: int = HIST_BINS) -> list[torch.Tensor]:
    """Per-parameter gradient histograms the way wandb's ``watch`` takes them.

    For each gradient: its minimum and maximum read to the host (two syncs), a ``bins``-bin
    ``torch.histc`` over that range, and the counts copied to the host (a third sync).
    """
    out: list[torch.Tensor] = []
    for p in params:
        if p.grad is None:
            continue
        flat = p.grad.detach().reshape(-1).float()
        lo, hi = flat.min().item(), flat.max().item()
        out.append(torch.histc(flat, bins=bins, min=lo, max=hi).cpu())
    return out
