"""The mean-field prediction a run or a probe stores beside its measurement.

Shared by the training loop (``meta.json`` of every run) and the probe, so both draw the same
line in their reports.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gradlab.errors import GradlabError
from gradlab.theory.meanfield import predict_profile


def meanfield_prediction(model: nn.Module, input_size: tuple[int, ...]) -> list[dict[str, Any]] | None:
    """The mean-field prediction of dL/dh per layer, relative to the last layer, for reports to
    draw beside the measurement; ``None`` where the theory does not apply (normalisation,
    shortcuts) or the model cannot be traced."""
    try:
        frame = predict_profile(model, input_size)
    except GradlabError:
        return None
    return [{"layer": str(r.layer), "pred_rel": float(r.pred_rel)} for r in frame.itertuples()]
