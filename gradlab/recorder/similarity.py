"""Per-example structure of one layer's output across the batch: cosines and dead units.

Both reduce one tensor to a few device values in one pass, with no host sync.

Mean pairwise cosine. Dim 0 is the batch; each example's row x_i is everything else,
flattened. With unit rows u_i = x_i / ||x_i||, the sum over ordered pairs i != j of
<u_i, u_j> is ||sum_i u_i||^2 - n, and there are n(n - 1) such pairs, so the mean cosine is
their ratio: one pass over the batch, no B x B matrix. Restricted to pairs with the same
label, it is sum over classes of (||sum_{i in c} u_i||^2 - n_c) over sum_c n_c(n_c - 1).

A row that is exactly zero (an input a dead layer maps to 0, an example whose gradient is
exactly 0) has no direction: it is left out, of the sums and of n. So the cosine is the mean
over pairs of non-zero rows, and NaN when fewer than two rows are non-zero (no pair to
average). A row holding NaN or inf makes the value NaN: that is a non-finite signal, not a
similarity. The numerator and the pair count are returned separately so that several calls
(a module used twice, micro-batches, DDP ranks) combine into one mean over all their pairs;
pairs never span two calls.

Dead units. A unit is dead in a batch when it outputs 0 for every example (and every position).
What a unit is depends on the output's layout: dim 1 for N x F and N x C x ... (the channel of
a convolution); for a 3-d output it is dim 1 only after a convolution or a normalisation over
channels (N x C x L), otherwise the last dim (N x T x D, a feature of every token of a
Linear-on-sequence layer).
"""

from __future__ import annotations

import torch

#: Nothing to measure in a batch of one example, or in a 0-d output.
MIN_BATCH = 2


def _unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit rows, with zero rows left as 0; float mask of the non-zero rows), float32."""
    rows = x.detach().reshape(x.shape[0], -1)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    # float64 accumulation: a float32 norm of a long row is off by up to ~1e-5 on the CPU (a
    # sequential sum), and that error, times n, would shift the cosine by ~2e-5 / (n - 1)
    norms = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64)
    nonzero = (norms != 0).to(rows.dtype)
    # 1/0 = inf for a zero row; where() keeps it out (a NaN norm keeps its NaN, as it should)
    inv = torch.where(norms != 0, 1.0 / norms, torch.zeros_like(norms))
    return rows * inv.to(rows.dtype)[:, None], nonzero


def cosine_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over ordered pairs of <u_i, u_j>, number of such pairs), float64 0-d tensors."""
    u, nonzero = _unit_rows(x)
    s = u.sum(0, dtype=torch.float64)
    n = nonzero.sum(dtype=torch.float64)
    return torch.dot(s, s) - n, n * (n - 1)


def class_cosine_sums(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same over pairs of examples with equal labels, without knowing the classes on the host.

    Each example is summed into the slot of the first example with its label, so the slots
    hold the per-class sums; no class count is read back.
    """
    u, nonzero = _unit_rows(x)
    same = labels[:, None] == labels[None, :]
    first = same.to(torch.uint8).argmax(1)  # argmax returns the first maximal index
    per_class = torch.zeros(u.shape, dtype=torch.float64, device=u.device).index_add_(0, first, u.double())
    n = nonzero.double()
    num = (per_class * per_class).sum() - n.sum()
    pairs = (same.double() @ n * n).sum() - n.sum()
    return num, pairs


def unit_dim(x: torch.Tensor, channels_first: bool) -> int | None:
    """Which dim of ``x`` holds the units (see the module docstring); None: no units to count."""
    if x.dim() < 2:
        return None
    if x.dim() == 3 and not channels_first:
        return 2
    return 1


def alive_units(x: torch.Tensor, dim: int, nonnegative: bool) -> torch.Tensor:
    """Bool per unit: some example (at some position) gives a non-zero output."""
    others = tuple(d for d in range(x.dim()) if d != dim)
    xd = x.detach()
    if not nonnegative:
        xd = xd.abs()
    # NaN is not 0: a NaN unit is not counted dead
    return torch.amax(xd, dim=others) != 0
