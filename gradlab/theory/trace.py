"""Tracing a model's forward pass into the chain of torch calls on its data path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradlab.errors import GradlabError


@dataclass
class Op:
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
        self.ops: list[Op] = []
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
        op = Op(
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


def trace_model(model: nn.Module, x: torch.Tensor) -> tuple[list[Op], int]:
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


def data_path(ops: list[Op], end: int) -> list[Op]:
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
