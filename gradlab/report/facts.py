"""The few numbers a headline quotes about one run, read from its tables and meta."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradlab.common import metrics as M
from gradlab.report.data import RunView

#: The signal a headline quotes first: dL/dh when recorded, else the weight gradients.
SIGNALS = M.PROFILE_SIGNALS
#: Shorter than the schema's labels: a headline names the gradient, not its norm.
SIGNAL_WORDS = {M.ACT_GRAD_NORM: "dL/dh", M.GRAD_NORM: "dL/dW"}


@dataclass
class RunFacts:
    """Held-out accuracy, final loss, status and the diagnosed profile of one run."""

    label: str
    eval_acc: float  # the last held-out accuracy; NaN when never evaluated
    eval_step: int | None
    final_loss: float  # mean training loss over the last tenth of the steps (at most 50 steps)
    loss_steps: int  # how many steps that mean covers
    status: str
    nonfinite_step: int | None
    signal: str | None  # the metric the profile figures below are about
    verdict: dict[str, str]  # phase -> verdict of ``signal``
    decades: dict[str, float]  # phase -> decades lost per layer of ``signal``
    ratio: dict[str, float]  # phase -> first/last ratio of ``signal``

    @property
    def stopped(self) -> bool:
        return self.nonfinite_step is not None


def _last_finite(steps: np.ndarray, values: np.ndarray) -> tuple[float, int | None]:
    ok = np.flatnonzero(np.isfinite(values))
    if not ok.size:
        return math.nan, None
    return float(values[ok[-1]]), int(steps[ok[-1]])


def run_facts(view: RunView) -> RunFacts:
    """The facts of one run (NaN where the run did not record the number)."""
    acc, acc_step = math.nan, None
    if M.EVAL_ACC in view.series:
        acc, acc_step = _last_finite(*view.series[M.EVAL_ACC])
    loss, n = math.nan, 0
    if M.LOSS in view.series:
        values = view.series[M.LOSS][1]
        values = values[np.isfinite(values)]
        if values.size:
            n = int(min(50, max(1, values.size // 10)))
            loss = float(values[-n:].mean())
    meta: dict[str, Any] = view.meta
    first = meta.get("nonfinite_first")
    nonfinite_step = None
    if isinstance(first, dict) and first.get("step") is not None:
        nonfinite_step = int(first["step"])
    status = str(getattr(view.run, "status", None) or meta.get("status", ""))
    signal = None
    verdict: dict[str, str] = {}
    decades: dict[str, float] = {}
    ratio: dict[str, float] = {}
    d = view.diagnosis
    for metric in SIGNALS:
        rows = d[d["metric"] == metric] if len(d) else d
        if len(rows):
            signal = metric
            for r in rows.itertuples(index=False):
                verdict[r.phase] = str(r.verdict)
                decades[r.phase] = float(r.decades_per_layer)
                ratio[r.phase] = float(r.first_to_last_ratio)
            break
    return RunFacts(view.label, acc, acc_step, loss, n, status, nonfinite_step, signal, verdict,
                    decades, ratio)


def num(x: float, digits: int = 3) -> str:
    """A number for a sentence: 'n/a' for NaN, scientific when tiny or huge."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e5:
        return f"{x:.1e}"
    return f"{x:.{digits}g}"
