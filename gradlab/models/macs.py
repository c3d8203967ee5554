"""Multiply-adds and a per-layer trace, from one forward pass with hooks.

Only convolutions and linear layers are counted (one multiply-add per weight use; biases,
norms, activations and pooling are not), which is how the ResNet paper and torchvision quote
their figures. Matrix products done functionally (e.g. attention in ViTs) are not seen.
The forward runs on whatever device the model is on; a model on the ``meta`` device gives the
figures without computing anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LayerInfo:
    """One leaf module as the forward pass met it."""

    name: str
    type: str
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int  # the module's own parameters
    macs: int  # per sample


def layer_macs(module: nn.Module, inputs: tuple, output: object) -> int:
    """Multiply-adds of one call of ``module`` per sample (0 for modules that are not counted)."""
    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            per_out = module.out_channels // module.groups * kernel
            return inputs[0][0].numel() * per_out
        return output[0].numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        batch = output.shape[0] if output.dim() > 1 else 1
        return output.numel() // batch * module.in_features
    return 0


def _input_like(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    """A zero sample on the model's device, in its floating dtype."""
    device, dtype = torch.device("cpu"), torch.get_default_dtype()
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            device, dtype = tensor.device, tensor.dtype
            break
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


def trace_layers(model: nn.Module, input_size: Sequence[int]) -> list[LayerInfo]:
    """Leaf modules in forward order with output shape, own parameters and multiply-adds.

    Runs one sample of shape ``input_size`` (C, H, W) in eval mode without gradients; the
    model's train/eval flags are restored afterwards.
    """
    infos: list[LayerInfo] = []
    seen: set[str] = set()
    handles = []

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if name in seen:  # a module called twice is listed once, its MACs added up
                for info in infos:
                    if info.name == name:
                        info.macs += layer_macs(module, inputs, output)
                return
            seen.add(name)
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            own = sum(p.numel() for p in module.parameters(recurse=False))
            infos.append(LayerInfo(name, type(module).__name__, shape, own, layer_macs(module, inputs, output)))

        return hook

    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook_for(name)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(_input_like(model, input_size))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return infos


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one sample of shape ``input_size`` (C, H, W).

    Counts convolutions and linear layers; see the module docstring.
    """
    return sum(info.macs for info in trace_layers(model, input_size))
