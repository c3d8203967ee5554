"""Reductions the recorder launches: sums of squares and non-finite counts, device-aware.

On CUDA the float32 reductions are tree-shaped and accurate, and the foreach kernels cover any
number of tensors in a few launches. On the CPU the norm kernels accumulate sequentially (a
relative error near 1e-5 for a million elements), so there the sum of squares is taken as
``sum(x * x)``, whose cascade summation keeps float32 accurate. Both square in float32, so a
value below ~1e-19 squares to 0 alike on every device (underflow, recorded as 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_HAS_FOREACH_POWSUM = hasattr(torch, "_foreach_powsum")
_HAS_POWSUM = hasattr(torch.linalg, "_powsum")
# The non-finite count needs a temporary as large as the tensors it covers; beyond this many
# elements it is taken in pieces, so it never costs more than 128 MiB in float32.
CHUNK_ELEMENTS = 1 << 25


def host_to_device(values: Sequence, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on ``device``, copied without making the host wait on the device.

    (A plain copy from pageable memory would synchronise the stream.) Callers cache the result.
    """
    t = torch.tensor(list(values), dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _as_float(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def sumsq(t: torch.Tensor) -> torch.Tensor:
    """Sum of squares of one tensor, as a float32 0-d tensor on its device."""
    if t.device.type == "cpu":
        x = _as_float(t)
        return torch.sum(x * x, dtype=torch.float32)
    if _HAS_POWSUM:
        return torch.linalg._powsum(t, 2, dtype=torch.float32)
    n = torch.linalg.vector_norm(t, dtype=torch.float32)
    return n * n


def sumsq_vector(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum of squares of each tensor, stacked into one float32 vector."""
    tensors = list(tensors)
    if tensors[0].device.type == "cpu":
        if all(t.dtype == torch.float32 and not t.is_sparse for t in tensors):
            # one foreach call squares them all (fewer dispatches than a mul per tensor); each
            # sum stays a cascade sum, so float32 keeps its accuracy
            return torch.stack([sq.sum() for sq in torch._foreach_mul(tensors, tensors)])
        return torch.stack([sumsq(t) for t in tensors])
    if _HAS_FOREACH_POWSUM:
        return torch.stack(torch._foreach_powsum(tensors, 2, dtype=torch.float32))
    norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return norms * norms


_CHAIN_OK: dict[str, bool] = {}


def _chain(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    # 0*g is 0 where g is finite and NaN where it is not; exp gives 1 or NaN; sign maps NaN to
    # 0; minus one leaves 0 (finite) or -1 (non-finite); the 1-norm counts them. All foreach
    # kernels (a few launches for any number of tensors), and exactly 0 when all is finite.
    t = torch._foreach_mul(tensors, 0.0)
    torch._foreach_exp_(t)
    torch._foreach_sign_(t)
    torch._foreach_sub_(t, 1.0)
    return torch._foreach_norm(t, 1, dtype=torch.float32)


def _chain_works(device: torch.device) -> bool:
    """Whether the chain counts right on this device (checked once per device, one sync)."""
    key = str(device)
    if key not in _CHAIN_OK:
        x = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, -2.5], device=device)
        _CHAIN_OK[key] = bool(_chain([x])[0].item() == 3.0)
    return _CHAIN_OK[key]


def chunks_of(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices grouped so that each group holds at most CHUNK_ELEMENTS elements (or one tensor)."""
    groups: list[list[int]] = [[]]
    size = 0
    for i, t in enumerate(tensors):
        n = t.numel()
        if groups[-1] and size + n > CHUNK_ELEMENTS:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups


def nonfinite_counts(tensors: Sequence[torch.Tensor], chunks: list[list[int]],
                     sumsq: torch.Tensor | None = None) -> torch.Tensor:
    """Number of NaN/Inf elements of each tensor, as a float32 vector.

    ``sumsq``: the tensors' sums of squares, already taken. On the CPU a tensor whose sum of
    squares is finite holds no NaN or inf, so only the others are counted (reading the check
    back costs nothing there: no device runs ahead of the host). On an accelerator that read
    would stall the host, so every tensor is counted.
    """
    tensors = list(tensors)
    if sumsq is not None and tensors[0].device.type == "cpu":
        suspect = torch.nonzero(~torch.isfinite(sumsq)).flatten().tolist()
        counts = torch.zeros(len(tensors), dtype=torch.float32)
        if suspect:  # a non-finite value, or finite ones whose squares overflow: count exactly
            part = [tensors[i] for i in suspect]
            counts[suspect] = nonfinite_counts(part, chunks_of(part))
        return counts
    out: list[torch.Tensor | None] = [None] * len(tensors)
    fast = tensors[0].device.type != "cpu" and _chain_works(tensors[0].device)
    for chunk in chunks:
        part = [tensors[i] for i in chunk]
        if fast:
            counts = _chain(part)
        else:
            # the 0-norm counts non-zeros, and NaN is non-zero: exact, one pass per tensor
            counts = torch._foreach_norm(torch._foreach_mul(part, 0.0), 0, dtype=torch.float32)
        for i, c in zip(chunk, counts):
            out[i] = c
    return torch.stack(out)  # type: ignore[arg-type]


# -- one activation tensor -----------------------------------------------------------------------
# Measured on this project's 2-core CPU for a 1M-element float32 tensor: var_mean 8 ms,
# count_nonzero 7.5 ms, histc 13 ms, but sum 0.08 ms and in-place elementwise ops ~0.1 ms each.
# So the CPU takes plain sums of elementwise results; CUDA takes the single fused kernels.


_ZEROS: dict[torch.device, torch.Tensor] = {}


def _zero(device: torch.device) -> torch.Tensor:
    z = _ZEROS.get(device)
    if z is None:
        z = _ZEROS[device] = torch.zeros((), dtype=torch.float32, device=device)
    return z


def moments(x: torch.Tensor) -> tuple[str, tuple[torch.Tensor, ...]]:
    """Reduces ``x`` to ('mv', (mean, var)) or ('shift', (c, sum(x - c), sum((x - c)^2))).

    Both are exact enough to merge in float64 without cancellation: Welford's var_mean on CUDA;
    on the CPU, sums shifted by one element of ``x`` (the cancellation in var = E[d^2] - E[d]^2
    then scales with (mean - c)^2 / var, about 1, not with mean^2 / var).
    """
    if x.device.type != "cpu":
        if x.dtype in (torch.float32, torch.float64):
            var, mean = torch.var_mean(x, correction=0)
            return "mv", (mean, var)
        return "shift", (_zero(x.device), torch.sum(x, dtype=torch.float32), sumsq(x))
    # a copy: x may be modified in place after the hook (ReLU(inplace=True), out += identity)
    c = x[(0,) * x.dim()].to(torch.float32, copy=True)
    d = x - c if x.dtype in (torch.float32, torch.float64) else x.float().sub_(c)
    s1 = d.sum()
    d.mul_(d)
    return "shift", (c, s1, d.sum())


def nonzero_count(x: torch.Tensor, nonnegative: bool = False) -> torch.Tensor:
    """Number of non-zero elements, float32 (NaN counts as non-zero on CUDA, zero on the CPU).

    ``nonnegative``: x has no negative elements (a ReLU output), so sign(x) is 0 or 1.
    """
    if x.device.type != "cpu":
        return torch.linalg.vector_norm(x, 0, dtype=torch.float32)
    s = torch.sign(_as_float(x))
    if not nonnegative:
        s.abs_()
    return s.sum(dtype=torch.float32)


def in_band_count(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Number of elements with lo < x < hi (up to the measure-zero boundary), float32."""
    if x.device.type != "cpu":
        if x.dtype == torch.float32 and not torch.are_deterministic_algorithms_enabled():
            return torch.histc(x, bins=1, min=lo, max=hi)[0]  # one kernel
        xf = x.float()
        return ((xf >= lo) & (xf <= hi)).sum(dtype=torch.float32)
    # half - |x - mid| is positive inside the band; clamp and sign make that 1, else 0
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    d = x.float() if x.dtype != torch.float32 else x.clone()
    d.sub_(mid).abs_().neg_().add_(half).clamp_min_(0).sign_()
    return d.sum(dtype=torch.float32)
