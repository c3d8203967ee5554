"""How second-moment maps pass through a layer's and a pool's geometry (padding, stride, groups).

Every function works on per-entry maps of one sample (batch 1) in float64; see the theory note
in :mod:`gradlab.theory.meanfield` for why maps over positions are carried rather than averages.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.errors import GradlabError
from gradlab.theory.ops import arg, conv_fn, describe, vjp
from gradlab.theory.trace import Op


def layer_forward(op: Op, m_in: torch.Tensor, var_w: float, var_b: float) -> torch.Tensor:
    """Q at a layer's output from M at its input: var_w * (sum of M over what each unit reads) + var_b."""
    weight = arg(op, 1, "weight", None)
    if op.name == "linear":
        total = m_in.sum(-1, keepdim=True)
        return var_w * total.expand(*m_in.shape[:-1], weight.shape[0]).clone() + var_b
    dims, groups = weight.dim() - 2, int(arg(op, 6, "groups", 1))
    c_in, c_out = m_in.shape[1], weight.shape[0]
    grouped = m_in.reshape(1, groups, c_in // groups, *m_in.shape[2:]).sum(2)
    ones = torch.ones((groups, 1, *weight.shape[2:]), dtype=torch.float64)
    stride, padding, dilation = arg(op, 3, "stride", 1), arg(op, 4, "padding", 0), arg(op, 5, "dilation", 1)
    summed = conv_fn(dims)(grouped, ones, None, stride, padding, dilation, groups)
    return var_w * summed.repeat_interleave(c_out // groups, dim=1) + var_b


def layer_backward(op: Op, g_out: torch.Tensor, var_w: float) -> torch.Tensor:
    """G at a layer's input from G at its output: E[(W^T g)^2] = var_w * (sum of G over readers)."""
    weight = arg(op, 1, "weight", None)
    in_shape = (1, *op.in_shape[1:])
    if op.name == "linear":
        total = g_out.sum(-1, keepdim=True)
        return var_w * total.expand(*g_out.shape[:-1], in_shape[-1]).clone()
    dims, groups = weight.dim() - 2, int(arg(op, 6, "groups", 1))
    c_in, c_out = in_shape[1], weight.shape[0]
    grouped = g_out.reshape(1, groups, c_out // groups, *g_out.shape[2:]).sum(2)
    ones = torch.ones((groups, 1, *weight.shape[2:]), dtype=torch.float64)
    stride, padding, dilation = arg(op, 3, "stride", 1), arg(op, 4, "padding", 0), arg(op, 5, "dilation", 1)
    conv = lambda x: conv_fn(dims)(x, ones, None, stride, padding, dilation, groups)  # noqa: E731
    summed = vjp(conv, (1, groups, *in_shape[2:]), grouped)
    return var_w * summed.repeat_interleave(c_in // groups, dim=1)


def max_pool_windows(op: Op) -> Callable[[torch.Tensor], torch.Tensor]:
    """Averaging over each max-pooling window's real entries (padding excluded), as a linear map."""
    dims = len(op.in_shape) - 2
    dilation = arg(op, 4, "dilation", 1)
    if dims not in (1, 2, 3) or arg(op, 5, "ceil_mode", False) or dilation not in (1, (1,) * dims, [1] * dims):
        raise GradlabError(f"max pooling {describe(op)} with ceil_mode or dilation is not modelled")
    kernel = arg(op, 1, "kernel_size", None)
    stride = arg(op, 2, "stride", None) or kernel
    padding = arg(op, 3, "padding", 0)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    return lambda x: pool(x, kernel, stride, padding, False, False)


def pool_window(op: Op) -> int:
    """Entries averaged per output entry for a non-overlapping average; refuse anything else."""
    if op.name == "mean":
        dims = arg(op, 1, "dim", None)
        if dims is None:
            dims = tuple(range(len(op.in_shape)))
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if 0 in [d % len(op.in_shape) for d in dims]:
            raise GradlabError("a mean over the batch dimension is not a layer the prediction can follow")
        return int(np.prod([op.in_shape[d] for d in dims]))
    spatial_in = op.in_shape[-(len(op.in_shape) - 2) :]
    spatial_out = op.out_shape[-len(spatial_in) :]
    if op.name.startswith("avg_pool"):
        kernel = arg(op, 1, "kernel_size", None)
        stride = arg(op, 2, "stride", None) or kernel
        padding = arg(op, 3, "padding", 0)
        n = len(spatial_in)
        as_tuple = lambda v: (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
        kernel, stride, padding = as_tuple(kernel), as_tuple(stride), as_tuple(padding)
        ok = kernel == stride and not any(padding) and all(i % k == 0 for i, k in zip(spatial_in, kernel, strict=True))
        if not ok:
            raise GradlabError(
                f"only non-overlapping average pooling that tiles the input is modelled, got kernel {kernel}, "
                f"stride {stride}, padding {padding} on {spatial_in}"
            )
        return int(np.prod(kernel))
    if any(i % o for i, o in zip(spatial_in, spatial_out, strict=True)):
        raise GradlabError(
            f"adaptive average pooling from {spatial_in} to {spatial_out} overlaps windows; use sizes that divide"
        )
    return int(np.prod([i // o for i, o in zip(spatial_in, spatial_out, strict=True)]))


def valid_fraction(op: Op) -> float:
    """Fraction of (output position, kernel tap) pairs of a convolution that read a real input."""
    if op.name == "linear":
        return 1.0
    weight = arg(op, 1, "weight", None)
    dims = weight.dim() - 2
    ones_in = torch.ones((1, 1, *op.in_shape[-dims:]), dtype=torch.float64)
    ones_k = torch.ones((1, 1, *weight.shape[2:]), dtype=torch.float64)
    counts = conv_fn(dims)(
        ones_in,
        ones_k,
        None,
        arg(op, 3, "stride", 1),
        arg(op, 4, "padding", 0),
        arg(op, 5, "dilation", 1),
    )
    return float(counts.mean()) / float(ones_k.numel())


def squeeze_channels(m: torch.Tensor) -> torch.Tensor:
    """A map equal across channels, kept as one channel (it broadcasts back): saves memory."""
    if m.dim() >= 3 and torch.equal(m, m[:, :1].expand_as(m)):
        return m[:, :1].clone()
    return m


def window_counts(op: Op, q_map: torch.Tensor) -> torch.Tensor:
    """Real (non-padding) entries in each max-pooling window, per output entry."""
    dims = len(op.in_shape) - 2
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    kernel = arg(op, 1, "kernel_size", None)
    stride = arg(op, 2, "stride", None) or kernel
    area = float(np.prod((kernel,) * dims if isinstance(kernel, int) else kernel))
    # Padding counted in the divisor: the average of ones is the fraction of real entries.
    fraction = pool(torch.ones_like(q_map), kernel, stride, arg(op, 3, "padding", 0), False, True)
    return torch.round(fraction * area)
