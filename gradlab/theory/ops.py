"""Traced ops: the names the prediction knows, and how to read an op's arguments and replay it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten

from gradlab.theory.trace import Op

# Traced function names by what the prediction does with them; rules.RULES maps each to its rule.
# Layers: their weights set var_w (and the maps through their geometry).
LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d"}
# Elementwise activations, applied to the pre-activation between two layers.
ACT_OPS = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "gelu", "silu", "silu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "softplus",
    "hardtanh", "hardtanh_", "relu6", "mish", "hardswish", "hardsigmoid", "logsigmoid",
    "softsign", "tanhshrink", "erf",
}  # fmt: skip
# Arithmetic with a number: elementwise too when the data tensor is its only tensor argument.
SCALAR_OPS = {
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__",
    "__itruediv__", "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_",
    "__sub__", "__rsub__", "__isub__", "neg", "neg_", "__neg__",
}  # fmt: skip
# Copies and casts: nothing changes.
SAME_OPS = {"contiguous", "clone", "to", "float", "double", "__pos__"}
# Reshapes: entries move, their moments go with them.
SHAPE_OPS = {
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
    "movedim", "view_as", "reshape_as", "unflatten",
}  # fmt: skip
# Dropout: scales both second moments by 1/(1-p) in training mode.
DROPOUT_OPS = {"dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "feature_dropout"}
# Max pooling right after the activation, and non-overlapping averages.
MAX_POOL_OPS = {"max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d"}
POOL_OPS = {
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "mean",
}  # fmt: skip


def arg(op: Op, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` of the traced call, else keyword ``name``, else ``default``."""
    if len(op.args) > index:
        return op.args[index]
    return op.kwargs.get(name, default)


def replay(op: Op) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise map ``op`` applied, as a function of its data input (other args kept)."""
    data = op.data_arg

    def swap(v: Any, t: torch.Tensor) -> Any:
        return t.clone() if v is data else v  # clone: in-place variants must not touch t

    def phi(t: torch.Tensor) -> torch.Tensor:
        args = tuple(swap(a, t) for a in op.args)
        kwargs = {k: swap(v, t) for k, v in op.kwargs.items()}
        return op.func(*args, **kwargs)

    return phi


def label(op: Op) -> str:
    """A short name for an op between layers: its name, and an activation's own settings."""
    name = op.name.strip("_").removesuffix("_") if op.name not in ("__rsub__",) else "rsub"
    if op.name in DROPOUT_OPS:
        return f"{name}(p={arg(op, 1, 'p', 0.5)})"
    if op.name in POOL_OPS or op.name in MAX_POOL_OPS:
        return name
    quiet = {"inplace", "approximate"} if op.kwargs.get("approximate") == "none" else {"inplace"}
    extra = [repr(a) for a in op.args if not isinstance(a, (torch.Tensor, bool))]
    extra += [f"{k}={v!r}" for k, v in op.kwargs.items() if k not in quiet and not isinstance(v, torch.Tensor)]
    return name + (f"({', '.join(extra)})" if extra else "")


def kinks_of(op: Op) -> tuple[float, ...]:
    """Where a traced activation's derivative jumps away from 0 (panel edges for the quadrature)."""
    name = op.name.strip("_").removesuffix("_")
    if name == "hardtanh":
        return (float(arg(op, 1, "min_val", -1.0)), float(arg(op, 2, "max_val", 1.0)))
    if name == "relu6":
        return (6.0,)
    if name in ("hardsigmoid", "hardswish"):
        return (-3.0, 3.0)
    return ()


def only_data_tensor(op: Op) -> bool:
    """Whether the data-path tensor is the op's only tensor argument (no weight, no mask)."""
    tensors = [t for t in tree_flatten((op.args, op.kwargs))[0] if isinstance(t, torch.Tensor)]
    return all(t is op.data_arg for t in tensors)


def describe(op: Op) -> str:
    """The op's name and module, as error messages quote it."""
    return f"'{op.name}'" + (f" in {op.module}" if op.module else "")


def f64(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 copy on the CPU: the prediction computes in float64."""
    return t.detach().to(device="cpu", dtype=torch.float64)


def vjp(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], grad: torch.Tensor) -> torch.Tensor:
    """The vector-Jacobian product of a linear map ``fn`` at an input of ``in_shape``."""
    with torch.enable_grad():
        x = torch.zeros(in_shape, dtype=torch.float64, requires_grad=True)
        (out,) = torch.autograd.grad(fn(x), x, grad)
    return out


def conv_fn(dims: int) -> Callable[..., torch.Tensor]:
    """The functional convolution for ``dims`` spatial dimensions."""
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
