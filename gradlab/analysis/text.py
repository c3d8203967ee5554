"""The diagnosis as plain text for the terminal (what ``gradlab probe`` prints)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gradlab.analysis.wording import fmt
from gradlab.common import metrics as M

# Short names that fit the terminal's 12-character column; the schema's labels
# (gradlab.common.metrics.label) are the long form plots use.
_METRIC_WORDS = {M.GRAD_NORM: "weight grads", M.ACT_GRAD_NORM: "dL/dh"}


def _row_line(row: Any) -> str:
    """One (metric, phase) row: the verdict and its numbers."""
    steps = (f"step {row.step_from}" if row.step_from == row.step_to
             else f"steps {row.step_from}-{row.step_to}")
    dpl = (f"{row.decades_per_layer:+.3f} decades/layer lost toward the input"
           if np.isfinite(row.decades_per_layer) else "no fit")
    extra = f", {row.n_zero} underflow (0.0)" if row.n_zero else ""
    if row.n_nonfinite:
        extra += f", {row.n_nonfinite} non-finite"
    margin = getattr(row, "margin", np.nan)
    if isinstance(margin, float) and np.isfinite(margin) and row.verdict != "non-finite":
        side = "past" if margin >= 0 else "short of"
        extra += f", {abs(margin):.0%} {side} the {getattr(row, 'leaning', None) or 'verdict'} threshold"
    return (f"  {_METRIC_WORDS.get(row.metric, row.metric):<12} {row.phase:<5} "
            f"{row.verdict.upper():<10} first/last {fmt(row.first_to_last_ratio)}, "
            f"{dpl}, {row.n_layers} layers{extra} ({steps})")


def format_diagnosis(df: pd.DataFrame) -> str:
    """The diagnosis as plain text, one block per run (what ``gradlab probe`` prints).

    One line per (metric, phase) with the verdict and its numbers, then each distinct
    suggestion for a non-healthy row once, with its reason.
    """
    if df is None or len(df) == 0:
        return f"diagnosis: nothing to diagnose (no {M.GRAD_NORM} or {M.ACT_GRAD_NORM} recorded)"
    lines: list[str] = []
    for run, block in df.groupby("run", sort=False):
        lines.append(f"diagnosis of {run}:")
        advice: dict[str, str] = {}
        for row in block.itertuples(index=False):
            lines.append(_row_line(row))
            if row.verdict not in ("healthy", "no-data") and row.suggestion:
                advice.setdefault(row.suggestion, row.reason)
        for suggestion, reason in advice.items():
            lines.append(f"  try: {suggestion}")
            lines.append(f"       because {reason}")
    return "\n".join(lines)
