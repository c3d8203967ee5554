"""Activation statistics per layer: dead and saturated fractions, and the std of responses."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from gradlab.analysis.diagnose import LayerMatrix
from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.profiles import profile_section
from gradlab.report.style import Section

_NORM = re.compile(r"norm", re.IGNORECASE)
_WEIGHT = re.compile(r"conv|linear", re.IGNORECASE)


def _responses(view: RunView, m: LayerMatrix) -> np.ndarray:
    """Layers whose output std is the paper's "response": norm layers (after BN, before the
    addition), else convolutions/linear layers, else every layer; by the meta's layer types."""
    types = [view.types.get(n, "") for n in m.layers]
    for pattern in (_NORM, _WEIGHT):
        mask = np.array([bool(pattern.search(t)) for t in types], dtype=bool)
        if mask.any():
            return mask
    return np.ones(len(m.layers), dtype=bool)


def _keep(view: RunView, m: LayerMatrix) -> np.ndarray:
    return _responses(view, m) if m.metric == M.ACT_STD else np.ones(len(m.layers), dtype=bool)


def activations_section(views: Sequence[RunView]) -> Section:
    """Dead fraction, saturated fraction and response std against aligned depth, init and late."""
    return profile_section(
        views,
        # The axis titles say more than the schema's labels: which activations each applies to.
        [(M.ACT_DEAD_UNITS, f"{M.label(M.ACT_DEAD_UNITS)} (ReLU units 0 for every example)"),
         (M.ACT_SATURATED_FRAC, f"{M.label(M.ACT_SATURATED_FRAC)} (sigmoid/tanh)"),
         (M.ACT_STD, M.label(M.ACT_STD))],
        key="activations", title="Activation statistics per layer",
        intro=("Dotted: at initialisation; solid: late in training. A high saturated fraction "
               "explains a vanishing gradient in sigmoid/tanh networks; many dead units cut a "
               "ReLU network's gradient. The std of responses (outputs of the norm layers, "
               "before the addition) is the ResNet paper's Fig. 7: smaller in residual nets "
               "than in plain ones."),
        phases=("init", "late"), log_y={M.ACT_DEAD_UNITS: False, M.ACT_SATURATED_FRAC: False, M.ACT_STD: None},
        keep=_keep, by_phase_columns=False,
    )
