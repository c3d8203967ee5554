"""Diagnosis on constructed profiles and runs whose answers are known by hand."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.analysis.diagnose import (
    COLUMNS,
    THRESHOLDS,
    diagnose_profile,
    diagnose_run,
    diagnose_runs,
    format_diagnosis,
    layer_matrices,
    layer_positions,
    model_traits,
    phase_windows,
)
from gradlab.errors import GradlabError
from gradlab.store import Run


def make_run(profile_by_step, *, metric="grad_norm", meta=None, steps=None, names=None, name="run"):
    """A run whose ``metric`` at step s is ``profile_by_step(s)`` (one value per layer)."""
    rows = []
    step_ids = sorted(profile_by_step) if isinstance(profile_by_step, dict) else range(profile_by_step[0])
    for s in step_ids:
        values = profile_by_step[s] if isinstance(profile_by_step, dict) else profile_by_step[1](s)
        for d, v in enumerate(values):
            layer = names[d] if names else f"l{d}"
            rows.append((s, layer, d, metric, float(v)))
    layers = pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"])
    step_frame = steps if steps is not None else pd.DataFrame(columns=["step", "metric", "value"])
    return Run(path=Path(name), meta={"name": name, **(meta or {})}, layers=layers, steps=step_frame)


# -- one profile --------------------------------------------------------------------------
def test_geometric_decay_of_10x_per_layer_is_vanishing_at_one_decade_per_layer():
    depth = np.arange(12)
    norms = 10.0 ** (depth - 11.0)  # the layer nearest the input is 1e-11 of the last
    p = diagnose_profile(depth, norms)
    assert p["verdict"] == "vanishing"
    assert p["decades_per_layer"] == pytest.approx(1.0)
    assert p["first_to_last_ratio"] == pytest.approx(1e-11)
    assert p["decades_lost"] == pytest.approx(11.0)
    assert p["fit_layers"] == 12 and p["n_zero"] == 0 and not p["underflow"]


def test_flat_profile_is_healthy():
    p = diagnose_profile(np.arange(20), np.full(20, 0.37))
    assert p["verdict"] == "healthy"
    assert p["first_to_last_ratio"] == pytest.approx(1.0)
    assert p["decades_per_layer"] == pytest.approx(0.0, abs=1e-12)


def test_growth_toward_the_input_is_exploding_with_negative_decades_per_layer():
    depth = np.arange(10)
    norms = 10.0 ** (-0.5 * depth)  # 10^0.5 larger at every step toward the input
    p = diagnose_profile(depth, norms)
    assert p["verdict"] == "exploding"
    assert p["decades_per_layer"] == pytest.approx(-0.5)
    assert p["first_to_last_ratio"] == pytest.approx(10.0 ** 4.5)


def test_zeros_on_the_input_side_are_underflow_and_vanishing_without_warnings():
    norms = np.array([0.0, 0.0, 0.0, 1e-30, 1e-20, 1e-10, 1e-3, 1e-2, 0.1, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log of zero, no division by zero
        p = diagnose_profile(np.arange(10), norms)
    assert p["verdict"] == "vanishing"
    assert p["underflow"] and p["n_zero"] == 3
    assert p["first_to_last_ratio"] == 0.0
    assert p["fit_layers"] == 7  # the fit uses the positive values only
    assert "underflow" in p["evidence"]


def test_all_zero_profile_is_vanishing():
    p = diagnose_profile(np.arange(5), np.zeros(5))
    assert p["verdict"] == "vanishing" and p["n_zero"] == 5
    assert math.isnan(p["decades_per_layer"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_anywhere_is_non_finite(bad):
    norms = np.ones(8)
    norms[5] = bad
    p = diagnose_profile(np.arange(8), norms)
    assert p["verdict"] == "non-finite" and p["n_nonfinite"] == 1


def test_slope_rule_needs_enough_layers_and_a_real_total():
    t = THRESHOLDS
    # 0.15 decades per layer over 10 layers: 1.35 decades in all, below the ratio rule
    # (3 decades) but a trend by the slope rule.
    assert diagnose_profile(np.arange(10), 10.0 ** (0.15 * np.arange(10)))["verdict"] == "vanishing"
    # the same slope over 4 layers (fewer than slope_min_layers) is not enough
    assert t.slope_min_layers > 4
    assert diagnose_profile(np.arange(4), 10.0 ** (0.15 * np.arange(4)))["verdict"] == "healthy"
    # a gentle 0.05 decades per layer is healthy
    assert diagnose_profile(np.arange(30), 10.0 ** (0.05 * np.arange(30)))["verdict"] == "healthy"


def test_order_of_the_input_does_not_matter_and_names_follow():
    depth = np.array([3, 0, 2, 1])
    norms = 10.0 ** depth.astype(float)
    p = diagnose_profile(depth, norms, layers=["d", "a", "c", "b"])
    assert p["first_layer"] == "a" and p["last_layer"] == "d"
    assert p["decades_per_layer"] == pytest.approx(1.0)


def test_empty_profile_and_mismatched_lengths():
    assert diagnose_profile([], [])["verdict"] == "no-data"
    with pytest.raises(GradlabError, match="equal length"):
        diagnose_profile([0, 1], [1.0])


# -- phases and grids ---------------------------------------------------------------------
def test_phase_windows():
    assert phase_windows(0) == {}
    assert phase_windows(1) == {"init": slice(0, 1)}
    assert phase_windows(2) == {"init": slice(0, 1), "late": slice(1, 2)}
    assert phase_windows(3) == {"init": slice(0, 1), "early": slice(1, 2), "late": slice(2, 3)}
    w = phase_windows(100)
    assert w["early"] == slice(1, 11) and w["late"] == slice(90, 100)


def test_layer_matrices_matches_a_pivot_and_keeps_nan_apart_from_missing():
    rng = np.random.default_rng(1)
    rows = [(s, f"m{d}", d, metric, rng.random()) for s in (0, 5, 9) for d in (2, 0, 1)
            for metric in ("grad_norm", "act_std")]
    rows = [r for r in rows if not (r[0] == 5 and r[1] == "m1" and r[3] == "grad_norm")]  # missing
    rows.append((7, "m0", 0, "grad_norm", np.nan))  # recorded NaN
    frame = pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"]).sample(frac=1, random_state=0)
    m = layer_matrices(frame)["grad_norm"]
    assert m.layers == ["m0", "m1", "m2"] and list(m.steps) == [0, 5, 7, 9]
    sub = frame[frame.metric == "grad_norm"]
    ref = sub.pivot(index="layer", columns="step", values="value").loc[m.layers, list(m.steps)]
    np.testing.assert_array_equal(m.values, ref.to_numpy())
    assert not m.present[1, 1] and m.present[0, 2] and np.isnan(m.values[0, 2])


def test_positions_count_weight_layers_from_the_meta_types():
    names = ["conv1", "bn1", "relu", "layer1.0.conv1", "layer1.0.bn1", "fc"]
    meta = {"layers": [{"name": n, "depth": i, "type": t, "num_params": 1}
                       for i, (n, t) in enumerate(zip(names, ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d",
                                                              "BatchNorm2d", "Linear"]))]}
    assert list(layer_positions(names, range(6), meta)) == [0, 0, 0, 1, 1, 2]
    assert list(layer_positions(names, range(6), {})) == [0, 1, 2, 3, 4, 5]


# -- whole runs ---------------------------------------------------------------------------
def test_single_step_run_has_the_init_phase_only():
    run = make_run({0: 10.0 ** (np.arange(8) - 7.0)}, metric="act_grad_norm")
    df = diagnose_run(run)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["phase"]) == ["init"] and list(df["metric"]) == ["act_grad_norm"]
    assert df["verdict"].iat[0] == "vanishing"
    assert df["decades_per_layer"].iat[0] == pytest.approx(1.0)


def test_run_with_many_steps_gets_three_phases_per_metric():
    run = make_run((40, lambda s: np.ones(6)))
    df = diagnose_run(run)
    assert list(df["phase"]) == ["init", "early", "late"]
    assert (df["verdict"] == "healthy").all()
    assert df.loc[df.phase == "late", "step_from"].iat[0] == 36


def test_weight_gradients_only_on_layers_with_parameters():
    names = ["conv1", "relu", "fc"]
    meta = {"layers": [{"name": "conv1", "depth": 0, "type": "Conv2d", "num_params": 10},
                       {"name": "relu", "depth": 1, "type": "ReLU", "num_params": 0},
                       {"name": "fc", "depth": 2, "type": "Linear", "num_params": 10}]}
    # a parameter-free layer's zero would read as underflow if it were diagnosed
    run = make_run({0: [1.0, 0.0, 1.0]}, names=names, meta=meta)
    row = diagnose_run(run).iloc[0]
    assert row["n_layers"] == 2 and row["n_zero"] == 0 and row["verdict"] == "healthy"


def test_growth_over_time_is_exploding_late():
    run = make_run((20, lambda s: np.full(8, 10.0 ** (s / 4))))  # flat in depth, 5 decades over time
    df = diagnose_run(run).set_index("phase")
    assert df.loc["init", "verdict"] == "healthy"
    assert df.loc["late", "verdict"] == "exploding"
    # the late profile is the per-layer median of steps 18 and 19 (mean of the two norms)
    assert df.loc["late", "growth_since_init"] == pytest.approx(np.log10((10 ** 4.5 + 10 ** 4.75) / 2))


def test_non_finite_steps_in_the_steps_table_mark_the_phase():
    steps = pd.DataFrame({"step": [0, 15], "metric": ["loss", "nonfinite"], "value": [1.0, 1.0]})
    run = make_run((20, lambda s: np.ones(8)), steps=steps)
    df = diagnose_run(run).set_index("phase")
    assert df.loc["late", "verdict"] == "non-finite"
    assert df.loc["init", "verdict"] == "healthy"


def test_suggestions_follow_the_evidence():
    decay = {0: 10.0 ** (0.6 * np.arange(10))}
    sig = diagnose_run(make_run(decay, meta={"model": "mlp10:act=sigmoid"})).iloc[0]
    assert sig["verdict"] == "vanishing" and "ReLU" in sig["suggestion"] and "0.25" in sig["reason"]
    plain = diagnose_run(make_run(decay, meta={"model": "plain56:norm=none"})).iloc[0]
    assert "BatchNorm" in plain["suggestion"] and "residual" in plain["suggestion"]
    assert "He" in plain["suggestion"]
    healthy = diagnose_run(make_run({0: np.ones(10)}, meta={"model": "resnet56"})).iloc[0]
    assert healthy["suggestion"] == "none needed"


def test_exploding_suggests_a_clip_threshold_from_the_observed_norms():
    rng = np.random.default_rng(0)
    totals = rng.lognormal(0.0, 1.0, 50)
    steps = pd.DataFrame({"step": np.arange(50), "metric": "total_grad_norm", "value": totals})
    run = make_run((50, lambda s: 10.0 ** (-0.5 * np.arange(10))), steps=steps, meta={"model": "plain20"})
    row = diagnose_run(run).iloc[0]
    p10, p50, p90 = np.percentile(totals, [10, 50, 90])
    assert row["verdict"] == "exploding"
    assert row["total_norm_p50"] == pytest.approx(p50) and row["total_norm_p90"] == pytest.approx(p90)
    assert f"norm:{p50:.3g}" in row["suggestion"]


def test_clip_stats_name_the_layer_that_held_the_norm():
    fired = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=float)
    steps = pd.DataFrame({"step": np.arange(10), "metric": "clip_fired", "value": fired})

    def prof(s):  # on fired steps the last layer ("fc") holds 0.9^2 / (0.9^2 + 3 * 0.1^2) of it
        return [0.1, 0.1, 0.1, 0.9] if fired[s] else [1.0, 1.0, 1.0, 1.0]

    run = make_run((10, prof), steps=steps, names=["a", "b", "c", "fc"])
    row = diagnose_run(run).set_index("phase").loc["late"]
    # 10 recorded steps: early = step 1, late counts every step after it (2..9)
    assert row["clip_fired"] == 3 and row["clip_rate"] == pytest.approx(3 / 8)
    share = 0.81 / (0.81 + 0.03)
    assert row["clip_top_layers"].startswith(f"fc {share:.0%}")


def test_model_traits_from_spec_and_layer_types():
    assert model_traits({"model": "plain56:norm=none"}) | {} == {
        "saturating": False, "normalised": False, "residual": False, "act": "relu", "init": "default"}
    assert model_traits({"model": "resnet56"})["residual"] is True
    assert model_traits({"model": "mystery"})["normalised"] is None
    typed = model_traits({"model": "mystery", "layers": [{"name": "s", "type": "Sigmoid"}]})
    assert typed["saturating"] is True and typed["normalised"] is False


def test_diagnose_runs_and_text():
    a = make_run({0: 10.0 ** (np.arange(8) - 7.0)}, name="plainish", meta={"model": "plain20:norm=none"})
    b = make_run({0: np.ones(8)}, name="resish")
    df = diagnose_runs([a, b])
    assert list(df["run"]) == ["plainish", "resish"]
    text = format_diagnosis(df)
    assert "diagnosis of plainish" in text and "VANISHING" in text and "+1.000 decades/layer" in text
    assert "HEALTHY" in text and text.count("try:") == 1
    assert "nothing to diagnose" in format_diagnosis(diagnose_runs([]))


def test_run_without_layer_rows():
    run = Run(path=Path("e"), meta={"name": "e"}, layers=pd.DataFrame(), steps=pd.DataFrame())
    df = diagnose_run(run)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)
