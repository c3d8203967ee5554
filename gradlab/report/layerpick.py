"""Which layers a depth profile shows: the weight layers by default, every layer on request.

A convolution, its BatchNorm and its ReLU follow each other in depth, and their norms differ
by a constant factor, so a profile over every module zig-zags and hides the trend along the
net. By default the profiles and heatmaps keep the layers with weights (convolutions and
linear layers, by the module types stored in the run's meta); ``all_layers=True`` keeps every
recorded layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gradlab.analysis.diagnose import LayerMatrix
from gradlab.report.data import RunView

_WEIGHT_TYPE = re.compile(r"conv|linear", re.IGNORECASE)
# Names of the modules around a weight layer, for runs whose meta has no module types.
_NOT_WEIGHT_NAME = re.compile(r"(^|[._])(bn|norm|act|relu|sigmoid|tanh|gelu|pool|avgpool|maxpool|drop\w*)\d*$",
                              re.IGNORECASE)

Keep = Callable[[RunView, LayerMatrix], np.ndarray]


def weight_layer_mask(view: RunView, m: LayerMatrix) -> np.ndarray:
    """True for the rows of ``m`` that are weight layers (all rows when none can be told apart)."""
    types = [view.types.get(name, "") for name in m.layers]
    if any(types):
        mask = np.array([bool(_WEIGHT_TYPE.search(t)) for t in types], dtype=bool)
    else:
        mask = np.array([not _NOT_WEIGHT_NAME.search(name) for name in m.layers], dtype=bool)
    return mask if mask.any() else np.ones(len(m.layers), dtype=bool)


def layer_filter(all_layers: bool) -> Keep | None:
    """The ``keep`` function of the figures: None (every layer) or :func:`weight_layer_mask`."""
    return None if all_layers else weight_layer_mask


def subset(m: LayerMatrix, mask: np.ndarray) -> LayerMatrix:
    """``m`` restricted to the rows where ``mask`` is True."""
    rows = np.flatnonzero(mask)
    return replace(m, layers=[m.layers[r] for r in rows], depths=m.depths[rows],
                   values=m.values[rows], present=m.present[rows])
