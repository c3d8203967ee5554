"""The comparison verdict on stored runs built by hand: which trains better, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.analysis.collapse import similarity_findings
from gradlab.analysis.comparison import compare_runs, format_comparison, summarize
from gradlab.store import Run

N_LAYERS = 10
LAYER_META = [{"name": f"conv{d}", "depth": d, "type": "Conv2d", "num_params": 9} for d in range(N_LAYERS)]


def make_run(name: str, *, acc: float, loss: float, upper_cos: float, class_cos: float = 0.2,
             seed: int = 0, decay: float = 0.0, meta: dict | None = None, first_loss: float = 2.35) -> Run:
    rows = []
    for s in range(0, 100, 4):
        for d in range(N_LAYERS):
            layer = f"conv{d}"
            rows.append((s, layer, d, "act_grad_norm", 10.0 ** (-decay * (N_LAYERS - 1 - d))))
            # upper_cos: the same-class dL/dh cosine of the upper half after init
            cos = upper_cos if (s > 0 and d >= N_LAYERS // 2) else class_cos
            rows.append((s, layer, d, "act_grad_cos_class", cos))
            rows.append((s, layer, d, "act_cos", 0.9))
    layers = pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"])
    # the loss: first_loss over the first tenth of the steps, loss over the last tenth
    losses = np.interp(np.arange(100), [0, 9, 90, 99], [first_loss, first_loss, loss, loss])
    steps = [(s, "loss", float(v)) for s, v in enumerate(losses)] + [(99, "eval_acc", acc)]
    spec = {"model": name, "seed": seed, "lr": 1e-3}
    full_meta = {"name": name, "model": name, "seed": seed, "spec": spec, "layers": LAYER_META,
                 "data": {"num_classes": 10}, "status": "finished", "wall_time_s": 12.0,
                 "nonfinite_steps": 0, "skipped_steps": 0, "nonfinite_first": None, **(meta or {})}
    return Run(path=Path(name), meta=full_meta, layers=layers,
               steps=pd.DataFrame(steps, columns=["step", "metric", "value"]))


def test_collapse_finding_takes_the_median_of_the_upper_weight_layers():
    run = make_run("plain34", acc=0.1, loss=2.3, upper_cos=0.98)
    late = [f for f in similarity_findings(run) if f["signal"] == "act_grad_cos_class" and f["phase"] == "late"]
    assert len(late) == 1
    # Upper half by position, without the output layer: conv5..conv8, all at 0.98.
    assert late[0]["value"] == pytest.approx(0.98)
    assert late[0]["n_layers"] == 4
    assert late[0]["verdict"] == "collapsed"
    assert late[0]["margin"] == pytest.approx(0.98 - 0.7)


@pytest.mark.parametrize("cos, verdict", [(0.79, "borderline"), (0.61, "borderline"), (0.59, "healthy"),
                                          (0.81, "collapsed")])
def test_collapse_near_its_threshold_is_borderline(cos, verdict):
    run = make_run("x", acc=0.1, loss=2.3, upper_cos=cos)
    late = [f for f in similarity_findings(run) if f["signal"] == "act_grad_cos_class" and f["phase"] == "late"]
    assert late[0]["verdict"] == verdict


@pytest.mark.parametrize("cos, verdict", [(0.0, "shattered"), (0.05, "borderline"), (0.22, "healthy"),
                                          (1.0, "collapsed")])
def test_shattered_and_collapsed_at_init(cos, verdict):
    run = make_run("x", acc=0.1, loss=2.3, upper_cos=0.3, class_cos=cos)
    init = [f for f in similarity_findings(run) if f["signal"] == "act_grad_cos_class" and f["phase"] == "init"]
    assert init[0]["verdict"] == verdict


def test_headline_names_the_better_run_and_the_collapse_with_numbers():
    good = make_run("resnet34", acc=0.506, loss=1.42, upper_cos=0.34, class_cos=0.035)
    bad = make_run("plain34", acc=0.105, loss=2.30, upper_cos=0.93, class_cos=-0.004)
    c = compare_runs([bad, good], reused=[False, True])
    assert c.better == "resnet34"
    assert c.headline.startswith("resnet34 trains better than plain34: held-out accuracy 0.51 vs 0.10; "
                                 "chance 0.10; final training loss 1.42 vs 2.30.")
    assert "plain34 collapsed" in c.headline
    assert "same-class dL/dh cosine of the upper layers 0.93 in plain34 vs 0.34 in resnet34 late" in c.headline
    assert "at init it was -0.004 vs 0.035" in c.headline
    # plain34's loss went from 2.35 to 2.30: stalled, and collapsed is why
    assert [s.verdict for s in c.runs] == ["stalled", "healthy"]
    assert c.runs[0].collapsed and "collapsed" in c.runs[0].why
    text = format_comparison(c)
    assert "plain34: stalled, held-out acc 0.10, loss 2.30, 12 s (trained)" in text
    assert "resnet34: healthy, held-out acc 0.51, loss 1.42, 12 s (reused)" in text


def test_a_gap_within_the_seed_spread_is_a_tie():
    runs = [make_run("a", acc=a, loss=2.0, upper_cos=0.5, seed=s) for s, a in enumerate([0.30, 0.50, 0.40])]
    runs += [make_run("b", acc=a, loss=2.0, upper_cos=0.5, seed=s) for s, a in enumerate([0.35, 0.45, 0.38])]
    c = compare_runs(runs)
    assert c.better is None
    assert c.headline.startswith("Neither a nor b trains clearly better: held-out accuracy 0.40 vs 0.39")
    assert "spread over 3 seeds 0.20" in c.headline


def test_seeds_are_pooled_and_the_gap_beyond_their_spread_wins():
    runs = [make_run("resnet34", acc=a, loss=1.5, upper_cos=0.5, seed=s) for s, a in enumerate([0.33, 0.36, 0.51])]
    runs += [make_run("plain34", acc=a, loss=2.3, upper_cos=0.98, seed=s) for s, a in enumerate([0.107, 0.109, 0.105])]
    c = compare_runs(runs)
    assert c.better == "resnet34"
    mean_good = np.mean([0.33, 0.36, 0.51])
    assert f"held-out accuracy {mean_good:.2f} vs 0.11" in c.headline
    assert "spread over 3 seeds 0.18" in c.headline


def test_a_non_finite_run_is_named_with_its_step_and_layer():
    bad = make_run("mlp4", acc=0.1, loss=np.nan, upper_cos=0.5,
                   meta={"status": "failed", "nonfinite_steps": 1,
                         "nonfinite_first": {"step": 3, "layer": "fc2"}})
    s = summarize(bad)
    assert s.verdict == "non-finite"
    assert s.why == "stopped on a non-finite value at step 3 in fc2"
    good = make_run("mlp4:norm=batch", acc=0.4, loss=1.2, upper_cos=0.5)
    c = compare_runs([bad, good])
    assert c.better == "mlp4:norm=batch"
    assert "mlp4 stopped on a non-finite value at step 3 in fc2." in c.headline


def test_vanishing_run_is_explained_by_its_norms():
    good = make_run("resnet56", acc=0.4, loss=1.5, upper_cos=0.5)
    bad = make_run("plain56", acc=0.1, loss=2.3, upper_cos=0.5, decay=0.5)
    c = compare_runs([good, bad])
    assert "plain56's gradient is vanishing" in c.headline
    assert ("dL/dh changes +0.500 decades per layer toward the input in plain56 vs +0.000 in "
            "resnet56 at init, +0.500 vs +0.000 late") in c.headline


def test_level_accuracy_falls_back_to_the_training_loss():
    # Both at chance on held-out data, but one fits the training data: 2.02 against 2.29.
    a = make_run("plain20", acc=0.09, loss=2.02, upper_cos=0.4, first_loss=2.4)
    b = make_run("plain20:norm=none", acc=0.10, loss=2.29, upper_cos=0.4, decay=0.4, first_loss=2.4)
    c = compare_runs([a, b])
    assert c.better == "plain20"
    assert c.headline.startswith("plain20 trains better than plain20:norm=none by training loss: "
                                 "2.02 vs 2.29 at the end; held-out accuracy is level (0.09 vs 0.10")
    assert "plain20:norm=none's gradient is vanishing; plain20's is healthy" in c.headline


def test_losses_within_five_percent_are_level():
    a = make_run("a", acc=0.10, loss=2.30, upper_cos=0.4)
    b = make_run("b", acc=0.10, loss=2.25, upper_cos=0.4)
    assert compare_runs([a, b]).better is None


def test_a_stalled_run_with_healthy_flow_is_said_so():
    # Seed 2 of the main job: plain34 does not learn, yet neither its norms nor its same-class
    # cosine (0.55) single it out.
    good = make_run("resnet34", acc=0.51, loss=1.06, upper_cos=0.52)
    bad = make_run("plain34", acc=0.10, loss=2.33, upper_cos=0.55)
    c = compare_runs([bad, good])
    assert [s.verdict for s in c.runs] == ["stalled", "healthy"]
    assert not c.runs[0].collapsed
    assert ("plain34 stalled (training loss 2.33 at the end against 2.35 at the start); the gradient "
            "norms do not explain it") in c.headline
    assert "nor does the same-class dL/dh cosine (same-class dL/dh cosine of the upper layers 0.55" in c.headline
