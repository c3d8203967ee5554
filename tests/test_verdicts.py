"""Verdicts that hold: margins, the borderline band, non-finite runs and dead units.

Each profile is built by hand, so the expected numbers follow from the construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.analysis.diagnose import THRESHOLDS, diagnose_profile, diagnose_run
from gradlab.store import Run


def _endpoints(decades: float, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n layers, flat but for the first, which is 10**-decades of the others (too few layers
    for the slope rule, so only the first-to-last rule can decide)."""
    norms = np.ones(n)
    norms[0] = 10.0 ** -decades
    return np.arange(n), norms


@pytest.mark.parametrize("decades", [2.63, 3.0, 3.51])
def test_profiles_near_the_three_decade_threshold_are_borderline_not_flipped(decades):
    # The reported flip: the same run at 1 and 2 threads lost 3.51 and 2.63 decades (first/last
    # 3.07e-4 and 2.35e-3) and was called vanishing and healthy.
    p = diagnose_profile(*_endpoints(decades))
    assert p["verdict"] == "borderline"
    assert p["leaning"] == "vanishing"
    assert p["margin"] == pytest.approx(decades / THRESHOLDS.ratio_decades - 1.0)


@pytest.mark.parametrize("decades, verdict", [(4.0, "vanishing"), (2.0, "healthy"), (-4.0, "exploding")])
def test_profiles_beyond_the_band_keep_firm_verdicts(decades, verdict):
    p = diagnose_profile(*_endpoints(decades))
    assert p["verdict"] == verdict
    assert p["margin"] == pytest.approx(abs(decades) / 3.0 - 1.0)


def test_margin_is_shown_in_the_evidence():
    p = diagnose_profile(*_endpoints(3.51))
    assert "17% past its threshold" in p["evidence"]


def _run(meta: dict, recorded_steps, step_rows=(), *, extra_layers=()) -> Run:
    rows = [(s, f"l{d}", d, "grad_norm", 1.0) for s in recorded_steps for d in range(4)]
    rows += list(extra_layers)
    layers = pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"])
    steps = pd.DataFrame(list(step_rows), columns=["step", "metric", "value"])
    return Run(path=Path("r"), meta={"name": "r", **meta}, layers=layers, steps=steps)


def test_a_run_stopped_between_recorded_steps_is_non_finite():
    # Recorded every 4th step; the NaN came at step 2 and the run stopped there: the only
    # recorded profile (step 0) is flat and finite.
    run = _run({"status": "failed", "nonfinite_steps": 1, "skipped_steps": 0,
                "nonfinite_first": {"step": 2, "layer": None}},
               [0], [(0, "loss", 2.3), (1, "loss", 1e30), (2, "nonfinite", 1.0)])
    frame = diagnose_run(run)
    assert set(frame["verdict"]) == {"non-finite"}
    assert (frame["nonfinite_steps"] == 1).all() and len(frame) == 1  # one metric, one phase


def test_a_run_that_skipped_a_step_is_non_finite_in_its_last_phase():
    run = _run({"status": "finished", "nonfinite_steps": 1, "skipped_steps": 1,
                "nonfinite_first": {"step": 3, "layer": "l1"}},
               range(0, 40, 4), [(3, "skipped", 1.0)])
    frame = diagnose_run(run)
    late = frame[frame["phase"] == "late"]
    assert (late["verdict"] == "non-finite").all()
    assert "step 3 in l1" in late["evidence"].iloc[0]
    assert (frame[frame["phase"] == "init"]["verdict"] == "healthy").all()


def test_half_zero_relu_outputs_are_not_dead_units():
    # act_zero_frac 0.5 is any ReLU at init; only act_dead_units (0 for every example) counts.
    zeros = [(s, "relu", 0, "act_zero_frac", 0.5) for s in range(0, 40, 4)]
    run = _run({"model": "mlp4:norm=none"}, range(0, 40, 4), extra_layers=zeros)
    frame = diagnose_run(run)
    assert frame["dead_frac"].isna().all()
    dead = [(s, "relu", 0, "act_dead_units", 0.25) for s in range(0, 40, 4)]
    frame = diagnose_run(_run({"model": "mlp4:norm=none"}, range(0, 40, 4), extra_layers=dead))
    assert frame["dead_frac"].iloc[0] == pytest.approx(0.25)


def test_dead_unit_suggestion_fires_only_on_dead_units():
    decay = lambda s: [(s, f"l{d}", d, "act_grad_norm", 10.0 ** (d - 9.0)) for d in range(10)]  # noqa: E731
    base = [row for s in range(0, 40, 4) for row in decay(s)]
    zero = [(s, "l5", 5, "act_zero_frac", 0.9) for s in range(0, 40, 4)]
    frame = diagnose_run(_run({"model": "plain20:norm=none"}, range(0, 40, 4), extra_layers=base + zero))
    assert not frame["reason"].str.contains("dead").any()
    dead = [(s, "l5", 5, "act_dead_units", 0.9) for s in range(0, 40, 4)]
    frame = diagnose_run(_run({"model": "plain20:norm=none"}, range(0, 40, 4), extra_layers=base + dead))
    vanishing = frame[(frame["metric"] == "act_grad_norm") & (frame["verdict"] == "vanishing")]
    assert vanishing["reason"].str.contains("90% of ReLU units are dead").all()


def test_underflow_spreading_from_the_input_is_not_read_as_growth():
    # 12 layers 10x apart at init (1e-11 .. 1); later the lower 9 underflow to 0.0 while the
    # upper three keep their values: nothing grew. Comparing the median of the positive values
    # (1e-1) with the median at init (~3e-6) would call it 4.5 decades of growth: "exploding".
    def profile(step):
        values = [10.0 ** (d - 11.0) for d in range(12)]
        return [0.0 if (step > 0 and d < 9) else v for d, v in enumerate(values)]

    rows = [(s, f"l{d}", d, "act_grad_norm", v) for s in range(0, 40, 4) for d, v in enumerate(profile(s))]
    frame = diagnose_run(_run({}, range(0, 40, 4), extra_layers=rows))
    late = frame[(frame["metric"] == "act_grad_norm") & (frame["phase"] == "late")].iloc[0]
    assert late["growth_since_init"] == pytest.approx(0.0)
    assert late["verdict"] == "vanishing"
