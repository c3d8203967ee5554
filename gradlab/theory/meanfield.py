"""Mean-field prediction of how the back-propagated gradient changes per layer.

For a plain feed-forward chain of convolution / linear layers, each followed by an elementwise
activation (no normalisation, no shortcuts), mean-field theory predicts the norm of dL/dh at
every layer's output from the initialised weights alone. gradlab overlays this prediction on
measured profiles, so this module states exactly what it computes.

Notation
--------
Layer l maps the previous layer's output h_{l-1} (its *pre-activation*) to

    h_l = W_l * a_{l-1} + b_l,      a_{l-1} = phi(h_{l-1}),

where ``*`` is a matrix product or a convolution, and g_l = dL/dh_l. Norms are over all of a
layer's output entries (one sample's; a measured norm also sums over the batch, which leaves
ratios between layers unchanged). ``var_w`` is the mean of the squared entries of the actual
weight tensor (the variance, for every zero-mean init), ``var_b`` the mean squared bias,
``fan_in`` the inputs of one output unit (in_channels/groups x kernel area for a convolution),
``fan_out`` torch's convention (out_channels x kernel area). z ~ N(0, 1) throughout.

Dense layer
-----------
Forward: with the weights independent of the activations they multiply, each unit of h_l is a
sum of fan_in terms w * a, so its second moment, averaged over units, is

    q_l = fan_in * var_w * E[a_{l-1}^2] + var_b,     E[a^2] = E[phi(sqrt(q_{l-1}) z)^2].

For the first layer E[a^2] is the data's second moment per entry (``input_second_moment``).

Backward: g_{l-1} = phi'(h_{l-1}) (.) (W_l^T g_l). Entry i of W^T g is sum_j W_ji g_j, a sum
over the n_l = fan_out output units; with W independent of g (the gradient-independence
assumption of mean-field theory) E[(W^T g)_i^2] = var_w * ||g_l||^2, and summing over the
n_{l-1} = fan_in entries gives E||W^T g_l||^2 = fan_in * var_w * ||g_l||^2. phi'(h_{l-1})
then multiplies each entry, independently of W^T g, so

    ||g_{l-1}||^2 = chi_l ||g_l||^2,      chi_l = fan_in * var_w * E[phi'(sqrt(q_{l-1}) z)^2].

That is the factor of the **total** squared norm over a layer, and it has the fan-in. The
*per-unit* variance ||g||^2 / n changes by chi_l * n_l / n_{l-1} = fan_out * var_w * E[phi'^2]
(column ``chi_unit``): that is why He et al. state the backward condition with the fan-out.
A fan-in He init keeps the total ||dL/dh|| of a ReLU net flat whatever the widths; a fan-out
He init keeps the per-unit variance flat. They agree when consecutive widths are equal.

Convolution
-----------
Entry (c_in, y) of W^T g sums w * g over every (c_out, tap) whose output position reads input
y. Within one input entry these terms use distinct weights, so E[(W^T g)_{c_in,y}^2] = var_w x
(sum of those g^2). Summed over all input entries, each output entry is counted once per input
channel of its group and per tap that reads a real (not padded) input:

    E||W^T g||^2 = var_w * (in_channels/groups) * sum_x valid(x) * ||g(x)||^2,

with valid(x) the taps of output position x that land inside the input. The stride does not
enter: a strided layer has fewer output entries and each input is read by fewer of them. With
``valid_frac`` the average of valid(x) / (kernel area) (1 without padding; (22/24)^2 = 0.84 for
a 3x3 kernel with padding 1 on an 8x8 map), this is fan_in * valid_frac * var_w * ||g||^2 when
||g(x)||^2 does not depend on x. It does: border entries receive gradient from fewer outputs,
so after a few layers the gradient is smaller at the border, where the taps are missing, and
the position-averaged factor comes out ~7% per layer too small on 8x8 maps (measured against
autograd in the tests). The forward pass has the same border effect. So the prediction carries
*maps* of E[h^2] and E[g^2] over positions through the actual ops (a convolution of the map
with an all-ones kernel forward, its transpose backward), for one sample. Weight variances are
equal across channels, so the maps depend on position only; chi_l is the ratio of the summed
maps. For dense layers this reduces exactly to the formulas above.

Between layers
--------------
Reshapes and flattening move map entries along. Dropout with drop probability p in training
mode scales E[a^2] and E[g^2] by 1/(1-p). A non-overlapping average over K entries (an average
pool, the global average pool before a classifier) hands each entry g/K, so ||g||^2 scales by
exactly 1/K; the second moment it passes forward depends on how correlated the averaged entries
are, which this theory does not track, and is computed for independent entries,
E[p^2] = E[a]^2 + Var[a]/K. A max pool right after the activation passes on each window's
largest entry and routes the window's gradient to it alone, so ||g||^2 picks up E[phi'(M)^2]
instead of E[phi'(h)^2], M the largest of the window's entries, taken as independent
N(0, q) (for ReLU this is close to 1, not 1/2: a window's maximum is almost never negative).
Rows that rest on the independent-entries assumption are flagged ``approx`` (every layer after
the first pooling step; for ReLU, leaky ReLU and identity, chi after an average pool does not
depend on q and stays exact).

What is returned
----------------
Per layer, in forward order: ``chi`` is the predicted factor of the **squared** norm,
||dL/dh_{l-1}||^2 / ||dL/dh_l||^2, carried by that layer's weights and the activation in front
of it (NaN on the first layer, which has no layer before it). ``pred_rel`` is the predicted
||dL/dh_l|| relative to the last layer's (the gradient at the last layer's output is taken as
uniform over its entries; the loss is not modelled). ``decades_per_layer`` is the
least-squares slope of log10(pred_rel) against depth: the statistic gradlab fits to measured
norms (positive: the gradient shrinks toward the input).

Quadrature
----------
Expectations over z are composite Gauss-Legendre sums against the Gaussian density, with a
second, finer set of panels where phi has its features (|sqrt(q) z| <= 40), a panel edge at 0
and at the known kinks of traced activations (hardtanh, relu6, hardsigmoid, hardswish).
Accuracy: ~1e-12 for ReLU, leaky ReLU and identity, ~1e-9 or better for smooth activations at
any q, up to ~1e-2 relative for a callable with kinks away from 0 that are not passed as
``kinks``. Plain Gauss-Hermite quadrature is exact for ReLU but off by several percent for
kinks away from 0 and for large q (tanh' becomes a spike narrower than the node spacing).
Across a map, values are interpolated in log q from a table over the map's range of q
(relative error ~1e-4).

Limits
------
Mean-field theory gives the average over random nets of the same widths. A single net deviates
by finite-width noise: in the tests the fitted slope stays within 0.0035 decades/layer of the
prediction for width-256 MLPs and within 0.009 for 32/64-channel conv nets; 16-channel CIFAR
nets scatter by ~0.014 (sd over seeds). Where the forward variance map amplifies small errors
(GELU with He init, whose q drifts toward 0 with a log-derivative above 1) a single net's q,
and with it chi, can drift far from the average; ReLU, leaky ReLU, identity (chi independent
of q), tanh and sigmoid (stable q) are not affected. Normalisation layers, shortcuts and
concatenations are refused: their dynamics are not this theory's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradlab.errors import GradlabError, first_line

__all__ = [
    "ACTIVATIONS",
    "chi",
    "qmap",
    "predict_profile",
    "predicted_decay",
    "summarize_profile",
]

Activation = str | Callable[[torch.Tensor], torch.Tensor]

# The named activations the model zoo offers ("linear" and "none" are spellings of identity).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "identity": lambda t: t,
}
_ALIASES = {"linear": "identity", "none": "identity"}


def _resolve(activation: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(activation):
        return activation
    if not isinstance(activation, str):
        raise GradlabError(f"activation must be a name or a callable, got {type(activation).__name__}")
    name = activation.strip().lower()
    name = _ALIASES.get(name, name)
    if name.startswith("leaky_relu:"):  # "leaky_relu:0.2" sets the negative slope
        try:
            slope = float(name.split(":", 1)[1])
        except ValueError:
            raise GradlabError(f"bad leaky_relu slope in {activation!r}: write e.g. leaky_relu:0.2") from None
        return lambda t: F.leaky_relu(t, slope)
    if name not in ACTIVATIONS:
        valid = ", ".join([*ACTIVATIONS, *_ALIASES])
        raise GradlabError(f"unknown activation {activation!r}: use one of {valid}, or pass a callable")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------- quadrature

_Z_MAX = 10.0  # the Gaussian density at 10 is 8e-23: nothing beyond matters in float64
_PANELS = 400
_ORDER = 8
# A map's moments are interpolated (linearly in log q) from a table over its range of q: at
# least 33 values, and 40 per factor e of range, which keeps the error below ~1e-4.
_GRID, _GRID_PER_E, _GRID_MAX = 33, 40, 400


@functools.lru_cache(maxsize=512)
def _rule(q_lo: float, q_hi: float, breaks: tuple[float, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z and weights w with sum(w * f(z)) ~= E_z[f(z)], z ~ N(0, 1), for q in [q_lo, q_hi].

    ``breaks`` are extra panel edges (in z) where f has a kink, so no panel straddles one.
    """
    parts = [np.linspace(-_Z_MAX, _Z_MAX, _PANELS + 1), np.array([b for b in breaks if abs(b) < _Z_MAX])]
    # phi's features (kinks, the bend of tanh) sit at |sqrt(q) z| of order 1: resolve them for
    # both ends of the range. An odd count of edges puts one at 0, where ReLU's kink is.
    for q in {q_lo, q_hi}:
        if q > 0 and 40.0 / math.sqrt(q) < _Z_MAX:
            span = 40.0 / math.sqrt(q)
            parts.append(np.linspace(-span, span, _PANELS + 1))
    edges = np.unique(np.concatenate(parts))
    x, w = np.polynomial.legendre.leggauss(_ORDER)
    left, right = edges[:-1, None], edges[1:, None]
    half = (right - left) / 2
    z = (left + right) / 2 + half * x[None, :]
    weights = half * w[None, :] * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(z.ravel()), torch.from_numpy(weights.ravel())


def _moments(
    phi: Callable[[torch.Tensor], torch.Tensor],
    qs: np.ndarray,
    max_of: int = 1,
    kinks: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E[phi(u)], E[phi(u)^2], E[phi'(u)^2]) for u = sqrt(q) z, z ~ N(0, 1), for each q in ``qs``.

    With ``max_of = K > 1``, z is instead the largest of K independent standard normals
    (density K * pdf(z) * cdf(z)^(K-1)): what a max-pooling window passes on. ``kinks`` are
    the points u where phi' jumps (0 is always a panel edge).
    """
    qs = np.asarray(qs, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(qs)) or np.any(qs < 0):
        raise GradlabError(f"the pre-activation variance q must be finite and >= 0, got {qs.min()}..{qs.max()}")
    breaks = tuple(sorted({round(k / math.sqrt(q), 15) for k in kinks for q in qs if q > 0 and k != 0}))
    z, w = _rule(float(qs.min()), float(qs.max()), breaks)
    if max_of > 1:
        w = w * max_of * torch.special.ndtr(z) ** (max_of - 1)
    with torch.enable_grad():
        u = (torch.from_numpy(np.sqrt(qs))[:, None] * z[None, :]).requires_grad_(True)
        y = phi(u)
        if not isinstance(y, torch.Tensor) or y.shape != u.shape:
            raise GradlabError("the activation must be an elementwise function of a tensor")
        dy = torch.autograd.grad(y.sum(), u, allow_unused=True)[0] if y.requires_grad else None
    dy = torch.zeros_like(u) if dy is None else dy  # a constant phi has no derivative path
    y, dy = y.detach().to(torch.float64), dy.to(torch.float64)
    return tuple((w * v).sum(1).numpy() for v in (y, y * y, dy * dy))  # type: ignore[return-value]


def _map_moments(
    phi: Callable[[torch.Tensor], torch.Tensor], q_map: torch.Tensor, max_of: int = 1, kinks: tuple[float, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_moments` for every entry of ``q_map``, by interpolation in a table over its range."""
    q = q_map.detach().to(torch.float64).reshape(-1).numpy()
    lo, hi = float(q.min()), float(q.max())
    if hi - lo <= 1e-12 * max(hi, 1e-300):
        out = _moments(phi, np.array([hi]), max_of, kinks)
        return tuple(torch.full_like(q_map, float(v[0])) for v in out)  # type: ignore[return-value]
    if lo > 0:
        n = int(min(_GRID_MAX, max(_GRID, math.ceil(_GRID_PER_E * math.log(hi / lo)) + 1)))
        grid = np.geomspace(lo, hi, n)
        x, xs = np.log(q), np.log(grid)
    else:  # q = 0 somewhere (all-zero weights): interpolate in q itself
        grid = np.linspace(lo, hi, _GRID_MAX)
        x, xs = q, grid
    table = _moments(phi, grid, max_of, kinks)
    return tuple(torch.from_numpy(np.interp(x, xs, v)).reshape(q_map.shape) for v in table)  # type: ignore[return-value]


def _scalar_q(q: float) -> np.ndarray:
    try:
        value = float(q)
    except (TypeError, ValueError):
        raise GradlabError(f"q must be a number (the pre-activation variance), got {q!r}") from None
    return np.array([value])


def chi(activation: Activation, q: float = 1.0, *, kinks: tuple[float, ...] = ()) -> float:
    """The sigma_w^2-free part of the per-layer gradient factor, E_z[phi'(sqrt(q) z)^2].

    ``activation`` is a name from :data:`ACTIVATIONS` (also ``linear``/``none`` for identity and
    ``leaky_relu:SLOPE``) or any elementwise torch function; ``q`` is the pre-activation
    variance. Multiply by sigma_w^2 = fan_in * Var(w) for the factor of the squared gradient
    norm per layer: ReLU gives 1/2 for every q, so He init (sigma_w^2 = 2) gives 1. For a
    callable whose derivative jumps away from 0 (hardtanh at +-1), pass those points as
    ``kinks`` for full accuracy (without them the error is up to about 1e-2 relative).
    """
    return float(_moments(_resolve(activation), _scalar_q(q), kinks=tuple(kinks))[2][0])


def qmap(activation: Activation, q: float = 1.0, *, kinks: tuple[float, ...] = ()) -> float:
    """The forward variance map's activation part, E_z[phi(sqrt(q) z)^2] (z ~ N(0, 1)).

    The next pre-activation variance is sigma_w^2 * qmap(phi, q) + sigma_b^2.
    """
    return float(_moments(_resolve(activation), _scalar_q(q), kinks=tuple(kinks))[1][0])


# ----------------------------------------------------------------------------- tracing

_LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d"}
_ACT_OPS = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "gelu", "silu", "silu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "softplus",
    "hardtanh", "hardtanh_", "relu6", "mish", "hardswish", "hardsigmoid", "logsigmoid",
    "softsign", "tanhshrink", "erf",
}  # fmt: skip
_SCALAR_OPS = {
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__",
    "__itruediv__", "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_",
    "__sub__", "__rsub__", "__isub__", "neg", "neg_", "__neg__",
}  # fmt: skip
_SAME_OPS = {"contiguous", "clone", "to", "float", "double", "__pos__"}
_SHAPE_OPS = {
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
    "movedim", "view_as", "reshape_as", "unflatten",
}  # fmt: skip
_DROPOUT_OPS = {"dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "feature_dropout"}
_MAX_POOL_OPS = {"max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d"}
_POOL_OPS = {
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "mean",
}  # fmt: skip
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


@dataclass
class _Op:
    """One torch call on the data path: its name, arguments and where its input came from."""

    name: str
    func: Callable[..., Any]
    args: tuple
    kwargs: dict
    srcs: list[int]  # node ids of the data-path tensors it read (-1 = the model's input)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    module: str  # qualified name of the innermost module running when it was called
    data_arg: Any = None  # the data-path tensor it read (to replay elementwise ops)


class _Tracer(TorchFunctionMode):
    """Records every torch call that reads a tensor derived from the model's input."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.node_of: dict[int, int] = {id(x): -1}
        self.keep: list[torch.Tensor] = [x]  # keeps ids unique while tracing
        self.stack: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        srcs, data = [], None
        for t in flat_in:
            node = self.node_of.get(id(t))
            if node is not None and node not in srcs:
                srcs.append(node)
                data = t if data is None else data
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not srcs or not outs:  # parameter-only work, or a shape query
            return out
        op = _Op(
            name=getattr(func, "__name__", repr(func)),
            func=func,
            args=args,
            kwargs=kwargs,
            srcs=srcs,
            in_shape=tuple(data.shape),
            out_shape=tuple(outs[0].shape),
            module=self.stack[-1] if self.stack else "",
            data_arg=data,
        )
        self.ops.append(op)
        for t in outs:
            self.node_of[id(t)] = len(self.ops) - 1
            self.keep.append(t)
        return out


# Per-module forward hook tables, set aside while tracing so that hooks the model already
# carries (a gradient recorder, say) neither see the probe batch nor break on it.
_HOOK_TABLES = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[_Op], int]:
    """Run ``model(x)`` under the tracer; return the ops and the node id of the output."""
    tracer = _Tracer(x)
    saved = [(m, {a: getattr(m, a) for a in _HOOK_TABLES if hasattr(m, a)}) for m in model.modules()]

    # A stack of module names: each op is attributed to the innermost running module. The
    # hooks must return None, or they would replace the module's input or output.
    def enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            tracer.stack.append(name)

        return hook

    def leave(module: nn.Module, inputs: Any, output: Any) -> None:
        tracer.stack.pop()

    try:
        for module, tables in saved:
            for attr, table in tables.items():
                setattr(module, attr, type(table)())
        for name, module in model.named_modules():
            module.register_forward_pre_hook(enter(name))
            module.register_forward_hook(leave)
        with torch.no_grad(), tracer:
            out = model(x)
    finally:
        for module, tables in saved:  # the model's own hooks back, ours gone with the tables
            for attr, table in tables.items():
                setattr(module, attr, table)
    if not isinstance(out, torch.Tensor):
        raise GradlabError("the model must return one tensor for the mean-field prediction")
    node = tracer.node_of.get(id(out))
    if node is None or node == -1:
        raise GradlabError("the model's output does not depend on its input; nothing to predict")
    return tracer.ops, node


def _path(ops: list[_Op], end: int) -> list[_Op]:
    """The ops from the input to node ``end``; refuse anything that is not a single chain."""
    path = []
    while end != -1:
        op = ops[end]
        if len(op.srcs) != 1:
            where = f" in {op.module}" if op.module else ""
            raise GradlabError(
                f"not a plain chain: '{op.name}'{where} merges two paths (a shortcut or concatenation); "
                "the mean-field prediction covers plain nets without shortcuts"
            )
        path.append(op)
        end = op.srcs[0]
    return path[::-1]


# ----------------------------------------------------------------------------- parsing


def _arg(op: _Op, index: int, name: str, default: Any) -> Any:
    if len(op.args) > index:
        return op.args[index]
    return op.kwargs.get(name, default)


def _replay(op: _Op) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise map ``op`` applied, as a function of its data input (other args kept)."""
    data = op.data_arg

    def swap(v: Any, t: torch.Tensor) -> Any:
        return t.clone() if v is data else v  # clone: in-place variants must not touch t

    def phi(t: torch.Tensor) -> torch.Tensor:
        args = tuple(swap(a, t) for a in op.args)
        kwargs = {k: swap(v, t) for k, v in op.kwargs.items()}
        return op.func(*args, **kwargs)

    return phi


def _label(op: _Op) -> str:
    """A short name for an op between layers: its name, and an activation's own settings."""
    name = op.name.strip("_").removesuffix("_") if op.name not in ("__rsub__",) else "rsub"
    if op.name in _DROPOUT_OPS:
        return f"{name}(p={_arg(op, 1, 'p', 0.5)})"
    if op.name in _POOL_OPS or op.name in _MAX_POOL_OPS:
        return name
    quiet = {"inplace", "approximate"} if op.kwargs.get("approximate") == "none" else {"inplace"}
    extra = [repr(a) for a in op.args if not isinstance(a, (torch.Tensor, bool))]
    extra += [f"{k}={v!r}" for k, v in op.kwargs.items() if k not in quiet and not isinstance(v, torch.Tensor)]
    return name + (f"({', '.join(extra)})" if extra else "")


def _kinks(op: _Op) -> tuple[float, ...]:
    """Where a traced activation's derivative jumps away from 0 (panel edges for the quadrature)."""
    name = op.name.strip("_").removesuffix("_")
    if name == "hardtanh":
        return (float(_arg(op, 1, "min_val", -1.0)), float(_arg(op, 2, "max_val", 1.0)))
    if name == "relu6":
        return (6.0,)
    if name in ("hardsigmoid", "hardswish"):
        return (-3.0, 3.0)
    return ()


def _only_data_tensor(op: _Op) -> bool:
    tensors = [t for t in tree_flatten((op.args, op.kwargs))[0] if isinstance(t, torch.Tensor)]
    return all(t is op.data_arg for t in tensors)


def _pool_window(op: _Op) -> int:
    """Entries averaged per output entry for a non-overlapping average; refuse anything else."""
    if op.name == "mean":
        dims = _arg(op, 1, "dim", None)
        if dims is None:
            dims = tuple(range(len(op.in_shape)))
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if 0 in [d % len(op.in_shape) for d in dims]:
            raise GradlabError("a mean over the batch dimension is not a layer the prediction can follow")
        return int(np.prod([op.in_shape[d] for d in dims]))
    spatial_in = op.in_shape[-(len(op.in_shape) - 2) :]
    spatial_out = op.out_shape[-len(spatial_in) :]
    if op.name.startswith("avg_pool"):
        kernel = _arg(op, 1, "kernel_size", None)
        stride = _arg(op, 2, "stride", None) or kernel
        padding = _arg(op, 3, "padding", 0)
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
        raise GradlabError(f"adaptive average pooling from {spatial_in} to {spatial_out} overlaps windows; "
                           "use sizes that divide")
    return int(np.prod([i // o for i, o in zip(spatial_in, spatial_out, strict=True)]))


def _valid_fraction(op: _Op) -> float:
    """Fraction of (output position, kernel tap) pairs of a convolution that read a real input."""
    if op.name == "linear":
        return 1.0
    weight = _arg(op, 1, "weight", None)
    dims = weight.dim() - 2
    ones_in = torch.ones((1, 1, *op.in_shape[-dims:]), dtype=torch.float64)
    ones_k = torch.ones((1, 1, *weight.shape[2:]), dtype=torch.float64)
    counts = _conv_fn(dims)(
        ones_in,
        ones_k,
        None,
        _arg(op, 3, "stride", 1),
        _arg(op, 4, "padding", 0),
        _arg(op, 5, "dilation", 1),
    )
    return float(counts.mean()) / float(ones_k.numel())


def _describe(op: _Op) -> str:
    return f"'{op.name}'" + (f" in {op.module}" if op.module else "")


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], grad: torch.Tensor) -> torch.Tensor:
    """The vector-Jacobian product of a linear map ``fn`` at an input of ``in_shape``."""
    with torch.enable_grad():
        x = torch.zeros(in_shape, dtype=torch.float64, requires_grad=True)
        (out,) = torch.autograd.grad(fn(x), x, grad)
    return out


def _conv_fn(dims: int) -> Callable[..., torch.Tensor]:
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]


# ----------------------------------------------------------------------------- propagation
#
# The prediction carries per-entry maps through the traced ops, for one sample (batch 1):
# forward, Q = E[h^2] at each layer output and M = E[a^2], MU = E[a] after the activation;
# backward, G = E[g^2] for g = dL/dh. Every layer mixes its inputs' channels with equal
# weight variance, so the maps are equal across channels and vary only over positions, where
# zero padding makes border entries see fewer inputs (forward) and fewer outputs (backward).
# Tracking that, rather than one average per layer, matters: on 8x8 maps the border-weighted
# factor differs from the position-averaged one by about 4% per layer.


@dataclass
class _Layer:
    op: _Op
    var_w: float
    var_b: float
    fan_in: int
    fan_out: int
    q: float  # mean E[h^2] over the layer's output entries
    approx: bool
    labels: list[str] = field(default_factory=list)  # what the map to the next layer does
    # G at this layer's output -> G at the previous layer's output, applied in order
    back: list[Callable[[torch.Tensor], torch.Tensor]] = field(default_factory=list)


def _layer_forward(op: _Op, m_in: torch.Tensor, var_w: float, var_b: float) -> torch.Tensor:
    """Q at a layer's output from M at its input: var_w * (sum of M over what each unit reads) + var_b."""
    weight = _arg(op, 1, "weight", None)
    if op.name == "linear":
        total = m_in.sum(-1, keepdim=True)
        return var_w * total.expand(*m_in.shape[:-1], weight.shape[0]).clone() + var_b
    dims, groups = weight.dim() - 2, int(_arg(op, 6, "groups", 1))
    c_in, c_out = m_in.shape[1], weight.shape[0]
    grouped = m_in.reshape(1, groups, c_in // groups, *m_in.shape[2:]).sum(2)
    ones = torch.ones((groups, 1, *weight.shape[2:]), dtype=torch.float64)
    stride, padding, dilation = _arg(op, 3, "stride", 1), _arg(op, 4, "padding", 0), _arg(op, 5, "dilation", 1)
    summed = _conv_fn(dims)(grouped, ones, None, stride, padding, dilation, groups)
    return var_w * summed.repeat_interleave(c_out // groups, dim=1) + var_b


def _layer_backward(op: _Op, g_out: torch.Tensor, var_w: float) -> torch.Tensor:
    """G at a layer's input from G at its output: E[(W^T g)^2] = var_w * (sum of G over readers)."""
    weight = _arg(op, 1, "weight", None)
    in_shape = (1, *op.in_shape[1:])
    if op.name == "linear":
        total = g_out.sum(-1, keepdim=True)
        return var_w * total.expand(*g_out.shape[:-1], in_shape[-1]).clone()
    dims, groups = weight.dim() - 2, int(_arg(op, 6, "groups", 1))
    c_in, c_out = in_shape[1], weight.shape[0]
    grouped = g_out.reshape(1, groups, c_out // groups, *g_out.shape[2:]).sum(2)
    ones = torch.ones((groups, 1, *weight.shape[2:]), dtype=torch.float64)
    stride, padding, dilation = _arg(op, 3, "stride", 1), _arg(op, 4, "padding", 0), _arg(op, 5, "dilation", 1)
    conv = lambda x: _conv_fn(dims)(x, ones, None, stride, padding, dilation, groups)  # noqa: E731
    summed = _vjp(conv, (1, groups, *in_shape[2:]), grouped)
    return var_w * summed.repeat_interleave(c_in // groups, dim=1)


def _max_pool_windows(op: _Op) -> Callable[[torch.Tensor], torch.Tensor]:
    """Averaging over each max-pooling window's real entries (padding excluded), as a linear map."""
    dims = len(op.in_shape) - 2
    dilation = _arg(op, 4, "dilation", 1)
    if dims not in (1, 2, 3) or _arg(op, 5, "ceil_mode", False) or dilation not in (1, (1,) * dims, [1] * dims):
        raise GradlabError(f"max pooling {_describe(op)} with ceil_mode or dilation is not modelled")
    kernel = _arg(op, 1, "kernel_size", None)
    stride = _arg(op, 2, "stride", None) or kernel
    padding = _arg(op, 3, "padding", 0)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    return lambda x: pool(x, kernel, stride, padding, False, False)


def _propagate(
    path: list[_Op], activation: Activation | None, input_second_moment: float
) -> list[_Layer]:
    """Run the forward maps along the chain and collect, per layer, its backward steps."""
    last = max((i for i, op in enumerate(path) if op.name in _LAYER_OPS), default=None)
    if last is None:
        raise GradlabError("found no Linear or Conv layer between the model's input and output")
    override = _resolve(activation) if activation is not None else None
    layers: list[_Layer] = []
    m_map = torch.full((1, *path[0].in_shape[1:]), float(input_second_moment), dtype=torch.float64)
    mu_map: torch.Tensor | None = None
    q_map = m_map
    stage = "input"  # input: before the first layer; pre: q_map is live; post: m_map, mu_map are
    pending: list[_Op] = []  # elementwise ops since the last layer, applied together at realise()
    approx = False

    def realise(max_pool: _Op | None = None) -> None:
        # Turn Q into the activation's moments; record the matching backward step.
        nonlocal m_map, mu_map, stage, approx
        layer = layers[-1]
        kinks: tuple[float, ...] = ()
        if pending and override is not None:
            phi = override
            act_label = activation if isinstance(activation, str) else getattr(activation, "__name__", "custom")
            layer.labels.append(act_label)
        else:
            phi = _compose([_replay(op) for op in pending])
            layer.labels.extend(_label(op) for op in pending) if pending else layer.labels.append("identity")
            # Kinks of the op that acts on h itself; later ops see transformed values.
            kinks = _kinks(pending[0]) if pending else ()
        if max_pool is None:
            mu_map, m_map, d_map = _map_moments(phi, q_map, 1, kinks)
            layer.back.append(lambda g, d=_squeeze_channels(d_map): g * d)  # noqa: B008 (binds this layer's map)
        else:
            # Each window passes on its largest entry and routes its gradient there alone; the
            # window's entries are taken as independent N(0, q) with q their mean.
            windows = _max_pool_windows(max_pool)
            q_win = windows(q_map)
            count = _window_counts(max_pool, q_map)
            mu_map, m_map, d_map = (torch.empty_like(q_win) for _ in range(3))
            for k in torch.unique(count).tolist():
                sel = count == k
                moments = _map_moments(phi, q_win[sel], int(k), kinks)
                for target, value in zip((mu_map, m_map, d_map), moments, strict=True):
                    target[sel] = value
            shape = tuple(q_map.shape)
            layer.back.append(lambda g, d=_squeeze_channels(d_map), w=windows, s=shape: _vjp(w, s, g * d))  # noqa: B008 (binds)
            layer.labels.append(_label(max_pool))
            approx = True
        stage = "post"
        pending.clear()

    for op in path[: last + 1]:
        name = op.name
        if name in _LAYER_OPS:
            weight = _arg(op, 1, "weight", None)
            if _arg(op, 0, "input", None) is not op.data_arg or not isinstance(weight, torch.Tensor):
                raise GradlabError(f"{_describe(op)} is fed its weight from the data path; not a plain layer")
            if stage == "pre":
                realise()
            bias = _arg(op, 2, "bias", None)
            weight = _f64(weight)
            var_w = float((weight**2).mean())
            var_b = float((_f64(bias) ** 2).mean()) if isinstance(bias, torch.Tensor) else 0.0
            receptive = int(np.prod(weight.shape[2:])) if weight.dim() > 2 else 1
            q_map = _layer_forward(op, m_map, var_w, var_b)
            layers.append(
                _Layer(
                    op, var_w, var_b, int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive,
                    float(q_map.mean()), approx,
                )
            )
            stage = "pre"
            continue
        if name in _SAME_OPS:  # copies and casts: the maps stay float64 and unchanged
            continue
        if name in _SHAPE_OPS:
            fn, in_shape = _replay(op), (1, *op.in_shape[1:])
            if stage == "input":
                m_map = fn(m_map)
            elif stage == "pre":
                q_map = fn(q_map)
                layers[-1].back.append(lambda g, fn=fn, s=in_shape: _vjp(fn, s, g))
            else:
                m_map, mu_map = fn(m_map), fn(mu_map)
                layers[-1].back.append(lambda g, fn=fn, s=in_shape: _vjp(fn, s, g))
            continue
        if name in _DROPOUT_OPS:
            p = float(_arg(op, 1, "p", 0.5))
            training = bool(_arg(op, 2, "training", _arg(op, 2, "train", True)))
            factor = 1.0 / (1.0 - p) if training and p > 0 else 1.0
            if stage == "pre":
                realise()
            m_map = m_map * factor  # E[(a * mask / (1-p))^2] = E[a^2] / (1-p); the mean is kept
            if stage == "post":
                layers[-1].back.append(lambda g, f=factor: g * f)  # and so is E[g^2]
                layers[-1].labels.append(_label(op))
            continue
        if stage == "input":
            raise GradlabError(
                f"{_describe(op)} runs before the first layer; the prediction takes the data as the first layer sees it"
            )
        if name in _MAX_POOL_OPS:
            if stage != "pre":
                raise GradlabError(f"{_describe(op)}: max pooling is modelled only right after the activation")
            if _arg(op, 6, "return_indices", False):
                raise GradlabError(f"{_describe(op)} returns indices; that is not a plain chain")
            realise(max_pool=op)
            continue
        if name in _POOL_OPS:
            k = _pool_window(op)
            if stage == "pre":
                realise()
            fn, in_shape = _replay(op), (1, *op.in_shape[1:])
            # The mean of K independent entries: E[p] = mean(MU), Var[p] = mean(M - MU^2) / K.
            mu_new = fn(mu_map)
            m_map = mu_new**2 + fn(m_map - mu_map**2) / k
            mu_map = mu_new
            # Backward: each entry gets g/K, so E[g^2] / K^2; the vjp supplies one 1/K.
            layers[-1].back.append(lambda g, fn=fn, s=in_shape, k=k: _vjp(fn, s, g) / k)
            layers[-1].labels.append(_label(op))
            approx = True
            continue
        elementwise = (name in _ACT_OPS or name in _SCALAR_OPS) and _only_data_tensor(op)
        unknown_unary = override is not None and _only_data_tensor(op) and op.out_shape == op.in_shape
        if not (elementwise or unknown_unary):
            raise GradlabError(
                f"{_describe(op)} between layers is not modelled (only elementwise activations, "
                "reshapes, dropout and average or max pooling are); pass activation= if it is an elementwise activation"
            )
        if stage == "post":
            raise GradlabError(f"{_describe(op)} after pooling or dropout is not modelled; apply the activation first")
        pending.append(op)
    return layers


def _squeeze_channels(m: torch.Tensor) -> torch.Tensor:
    """A map equal across channels, kept as one channel (it broadcasts back): saves memory."""
    if m.dim() >= 3 and torch.equal(m, m[:, :1].expand_as(m)):
        return m[:, :1].clone()
    return m


def _window_counts(op: _Op, q_map: torch.Tensor) -> torch.Tensor:
    """Real (non-padding) entries in each max-pooling window, per output entry."""
    dims = len(op.in_shape) - 2
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    kernel = _arg(op, 1, "kernel_size", None)
    stride = _arg(op, 2, "stride", None) or kernel
    area = float(np.prod((kernel,) * dims if isinstance(kernel, int) else kernel))
    # Padding counted in the divisor: the average of ones is the fraction of real entries.
    fraction = pool(torch.ones_like(q_map), kernel, stride, _arg(op, 3, "padding", 0), False, True)
    return torch.round(fraction * area)


def _compose(fns: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    def phi(t: torch.Tensor) -> torch.Tensor:
        for f in fns:
            t = f(t)
        return t

    return phi


# ----------------------------------------------------------------------------- prediction


def predict_profile(
    model: nn.Module,
    input_size: tuple[int, ...],
    *,
    activation: Activation | None = None,
    input_second_moment: float = 1.0,
) -> pd.DataFrame:
    """Predict the per-layer norm of dL/dh of a plain net from its initialised weights.

    ``input_size`` is one sample's shape without the batch dimension, e.g. ``(3, 32, 32)``.
    The model is run once on a batch of one (under ``no_grad``, in its current train/eval mode)
    to find the Conv/Linear layers in forward order and what lies between them; their actual
    weights give var_w, so any init works. ``activation`` overrides the elementwise map found
    between layers (a name or callable; needed only for custom activations the tracer does not
    know). ``input_second_moment`` is E[x^2] per input element (1.0 for standardised data).

    Returns one row per layer with columns ``layer, depth, type, fan_in, fan_out, var_w,
    var_b, sigma_w2, valid_frac, numel, q, approx, act, chi, chi_unit, pred_log10,
    pred_rel``; see the module docstring for the definitions. ``chi`` is the factor of the
    *squared* norm from this layer's output back to the previous layer's. The summary of
    :func:`summarize_profile` is also in ``frame.attrs``.

    Raises :class:`GradlabError` for nets the prediction does not cover: normalisation layers,
    shortcuts or concatenations, or an unrecognised op between layers.
    """
    if not isinstance(model, nn.Module):
        raise GradlabError(f"predict_profile needs an nn.Module, got {type(model).__name__}")
    norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _NORM_TYPES)})
    if norms:
        raise GradlabError(
            f"the mean-field prediction covers plain nets without normalisation; this model has {', '.join(norms)} "
            "(use norm=none)"
        )
    if not (
        isinstance(input_second_moment, (int, float))
        and math.isfinite(input_second_moment)
        and input_second_moment >= 0
    ):
        raise GradlabError(f"input_second_moment must be a finite number >= 0, got {input_second_moment!r}")
    try:
        shape = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise GradlabError(f"input_size must be a tuple of ints such as (3, 32, 32), got {input_size!r}") from None
    if not shape or min(shape) <= 0:
        raise GradlabError(f"input_size must be one sample's shape such as (3, 32, 32), got {input_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn((1, *shape), device=device, dtype=dtype)
    try:
        ops, end = _trace(model, x)
    except GradlabError:
        raise
    except RuntimeError as exc:  # a shape mismatch: the input size does not fit the model
        first = first_line(exc)
        raise GradlabError(f"the model does not run on input_size {shape}: {first}") from None
    layers = _propagate(_path(ops, end), activation, float(input_second_moment))

    # Backward: E[g^2] uniform over the last layer's output (the loss is not modelled), then
    # each layer's weights and the steps between it and the layer before.
    g_map = torch.ones((1, *layers[-1].op.out_shape[1:]), dtype=torch.float64)
    g_sums = [float(g_map.sum())]
    for idx in range(len(layers) - 1, 0, -1):
        g_map = _layer_backward(layers[idx].op, g_map, layers[idx].var_w)
        for step in reversed(layers[idx - 1].back):
            g_map = step(g_map)
        g_sums.append(float(g_map.sum()))
    g_sums = g_sums[::-1]

    rows = []
    for depth, layer in enumerate(layers):
        op = layer.op
        numel = int(np.prod(op.out_shape[1:]))
        prev_numel = int(np.prod(layers[depth - 1].op.out_shape[1:])) if depth else numel
        with np.errstate(divide="ignore", invalid="ignore"):
            chi_l = np.float64(g_sums[depth - 1]) / g_sums[depth] if depth else math.nan
        rows.append(
            {
                "layer": op.module,
                "depth": depth,
                "type": op.name,
                "fan_in": layer.fan_in,
                "fan_out": layer.fan_out,
                "var_w": layer.var_w,
                "var_b": layer.var_b,
                "sigma_w2": layer.fan_in * layer.var_w,
                "valid_frac": _valid_fraction(op),
                "numel": numel,
                "q": layer.q,
                "approx": layer.approx,
                "act": " -> ".join(layer.labels) if depth < len(layers) - 1 else "",
                "chi": float(chi_l),
                "chi_unit": float(chi_l) * numel / prev_numel,
            }
        )
    frame = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rel = 0.5 * (np.log10(np.array(g_sums)) - math.log10(g_sums[-1]))
    frame["pred_log10"] = log_rel
    frame["pred_rel"] = 10.0**log_rel
    frame.attrs.update(summarize_profile(frame))
    return frame


def _slope(depth: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of values against depth (NaN if fewer than two finite points)."""
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(depth[ok].astype(float), values[ok], 1)[0])


def summarize_profile(frame: pd.DataFrame) -> dict[str, float]:
    """Summary of a predicted profile.

    ``decades_per_layer``: least-squares slope of log10 predicted ||dL/dh|| against depth
    (positive when the gradient shrinks toward the input); ``first_to_last``: predicted
    ||dL/dh|| at the first layer over the last; ``chi_geomean``: geometric mean of chi.
    """
    chis = frame["chi"].to_numpy()[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        geo = float(np.exp(np.mean(np.log(chis)))) if len(chis) else math.nan
    return {
        "decades_per_layer": _slope(frame["depth"].to_numpy(), frame["pred_log10"].to_numpy()),
        "first_to_last": float(frame["pred_rel"].iloc[0]),
        "chi_geomean": geo,
        "num_layers": int(len(frame)),
    }


def predicted_decay(
    spec: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: tuple[int, ...] | None = None,
    seed: int = 0,
    input_second_moment: float = 1.0,
) -> dict[str, Any]:
    """Build a model spec with the model zoo (after ``torch.manual_seed(seed)``) and predict it.

    Returns :func:`summarize_profile`'s dict plus ``spec`` and ``profile`` (the frame of
    :func:`predict_profile`). ``input_size`` defaults to the model's native input size
    (3x32x32 for CIFAR-style nets and MLPs, 3x224x224 with the ImageNet stem).
    """
    from gradlab.models import build_model, native_input_size

    torch.manual_seed(seed)
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    size = tuple(input_size) if input_size is not None else native_input_size(spec, in_channels)
    frame = predict_profile(model, size, input_second_moment=input_second_moment)
    return {"spec": spec, **frame.attrs, "profile": frame}
