"""The first non-finite step and layer, kept on the device at every step, recorded or not.

Recorded rows only show the steps the schedule picks; an explosion between two of them would
be dated late and its layer unknown. So at every optimizer step the per-layer gradient norms
(one foreach norm over all gradients and one ``index_add_``) are checked for finiteness, and
the first step with a non-finite one is kept with the mask of its non-finite layers, all on the
device: a few tiny kernels per step and no host sync. The host reads the answer only when asked.

A layer is non-finite when its gradient norm is NaN or inf: a NaN or inf value in one of its
parameters' gradients (or, in float32, values so large that the norm overflows). The layer
named is the one nearest the loss among the non-finite ones (the deepest in forward order):
the backward pass reaches it first, so a NaN that arises in the backward shows there, and
everything below it inherits it.
"""

from __future__ import annotations

import numpy as np
import torch


class FiniteWatch:
    """Device state: the first step with a non-finite layer norm, and which layers were."""

    def __init__(self, num_layers: int, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.first_bad = torch.zeros(num_layers, dtype=torch.bool, device=device)
        self._found: tuple[int, np.ndarray] | None = None

    def update(self, step: int, layer_norms: torch.Tensor, has_grad: torch.Tensor) -> None:
        """``layer_norms``: per-layer norms (or sums of squares) of this step; ``has_grad``: bool
        per layer, whether it had a gradient at all."""
        if self._found is not None:
            return  # already known on the host: nothing earlier can come
        bad = ~torch.isfinite(layer_norms) & has_grad
        new = bad.any() & (self.first_step < 0)
        # the step goes in as a kernel argument: no host-to-device copy, no sync
        self.first_step.copy_(torch.where(new, step, self.first_step))
        self.first_bad.copy_(torch.where(new, bad, self.first_bad))

    def first(self) -> tuple[int, np.ndarray] | None:
        """(step, bool mask of the non-finite layers) of the first non-finite step; reads the device."""
        if self._found is None:
            step = int(self.first_step)
            if step < 0:
                return None
            self._found = (step, self.first_bad.cpu().numpy().copy())
        return self._found
