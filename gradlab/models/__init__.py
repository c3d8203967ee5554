"""The model zoo: plain and residual networks, MLPs and torchvision models, built from spec strings.

A spec is ``NAME[:key=value,...]``, e.g. ``"plain34:act=sigmoid,norm=none"``; the same string
works in the CLI, experiment files and Python::

    from gradlab.models import build_model, describe_model
    model = build_model("resnet56:init=kaiming_normal_fan_in", num_classes=10)
    describe_model("resnet50")["macs"]          # multiply-adds at 224x224

Names: ``resnet18/34/50/101/152`` and ``plain18..plain152`` (ImageNet-style), ``resnet20/32/44/
56/110`` and ``plain20..plain110`` (CIFAR-style 6n+2), ``mlpN`` and ``tv:NAME``.
"""

from __future__ import annotations

from gradlab.models.build import build_model, native_input_size
from gradlab.models.describe import describe_model
from gradlab.models.macs import count_macs, trace_layers
from gradlab.models.registry import list_models
from gradlab.models.spec import ModelSpec, parse_spec

__all__ = [
    "ModelSpec",
    "build_model",
    "count_macs",
    "describe_model",
    "list_models",
    "native_input_size",
    "parse_spec",
    "trace_layers",
]
