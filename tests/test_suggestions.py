"""The suggestion rules: which changes a verdict's evidence leads to, in which order, and when
the fallbacks speak. Expected strings are written out by hand from the rules' documentation."""

from __future__ import annotations

import math

import pytest

from gradlab.analysis.diagnose import THRESHOLDS, model_traits
from gradlab.analysis.suggestions import RULES, suggest

NAN = math.nan


def row(verdict, *, sat=NAN, dead=NAN, p50=NAN, clip_rate=NAN, top=""):
    return {"verdict": verdict, "saturated_frac": sat, "dead_frac": dead, "total_norm_p10": p50 / 2,
            "total_norm_p50": p50, "total_norm_p90": p50 * 2, "clip_rate": clip_rate, "clip_top_layers": top}


def changes(text):
    return text.split("; ") if text else []


def test_a_plain_sigmoid_net_without_norm_gets_every_structural_change_in_order():
    traits = model_traits({"model": "plain20:act=sigmoid,norm=none"})
    advice, reason = suggest(row("vanishing", sat=0.5), traits, {}, THRESHOLDS)
    assert changes(advice) == [
        "use ReLU instead of sigmoid/tanh (or add BatchNorm before them)",
        "add BatchNorm after each convolution / hidden linear layer",
        "add residual (skip) connections",
    ]
    assert reason.startswith("sigmoid's slope is at most 0.25") and "50% of units are saturated" in reason
    assert reason.index("no normalisation layer") < reason.index("a plain stack multiplies")
    assert reason.endswith("a skip path carries the gradient past each block unchanged")


def test_relu_plain_net_at_default_init_is_told_he_init():
    traits = model_traits({"model": "plain20:norm=none"})
    advice, _ = suggest(row("vanishing"), traits, {}, THRESHOLDS)
    assert changes(advice) == ["add BatchNorm after each convolution / hidden linear layer",
                               "add residual (skip) connections",
                               "He (Kaiming) initialisation, std = sqrt(2 / fan_in)"]


def test_the_fallbacks_speak_only_when_nothing_else_did():
    unknown = {"saturating": None, "normalised": None, "residual": None, "act": None, "init": None}
    advice, reason = suggest(row("vanishing"), unknown, {}, THRESHOLDS)
    assert advice == "add residual connections or BatchNorm"
    assert reason == "both keep the backward signal's scale from layer to layer"
    advice, _ = suggest(row("vanishing"), {**unknown, "attention": True}, {}, THRESHOLDS)
    assert advice.startswith("normalise the input of each sublayer (pre-LayerNorm)")
    assert "add residual connections or BatchNorm" not in advice
    advice, _ = suggest(row("vanishing", dead=0.9), {**unknown, "attention": True}, {}, THRESHOLDS)
    assert advice == "lower the learning rate or use He initialisation"  # a real cause: no fallback


def test_healthy_is_none_needed_unless_clipping_fires_on_most_steps():
    traits = model_traits({"model": "resnet34"})
    assert suggest(row("healthy", p50=2.0, clip_rate=0.5), traits, {}, THRESHOLDS)[0] == "none needed"
    advice, reason = suggest(row("healthy", p50=2.0, clip_rate=0.75), traits, {}, THRESHOLDS)
    assert advice == "raise the clipping threshold: it fired on 75% of steps"
    assert reason.startswith("clipping on most steps rescales every update; observed total norms: p10 1, median 2,")
    # without an observed total norm there is no threshold to name
    assert suggest(row("healthy", clip_rate=0.75), traits, {}, THRESHOLDS)[0] == "none needed"


def test_exploding_names_a_threshold_the_layers_and_the_learning_rate():
    traits = model_traits({"model": "plain20:norm=none"})
    advice, reason = suggest(row("exploding", p50=2.5, top="conv1 80%"), traits, {}, THRESHOLDS)
    assert changes(advice) == ["clip the total gradient norm at about 2.5 (--clip norm:2.5)", "add BatchNorm",
                               "lower the learning rate"]
    assert "layers holding the norm when clipping fired: conv1 80%" in changes(reason)
    assert changes(reason)[-1] == "growth toward the input or over time is amplified by large steps"


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_non_finite_says_where_and_suggests_bf16_only_under_fp16(amp):
    meta = {"nonfinite_first": {"step": 7, "layer": "fc"}, "spec": {"amp": amp}}
    advice, reason = suggest(row("non-finite"), {}, meta, THRESHOLDS)
    expected = ["lower the learning rate"]
    if amp == "fp16":
        expected.append("train in bf16 or keep a GradScaler (fp16 overflows above 65504)")
    assert changes(advice) == expected
    assert reason == ("non-finite values first appeared at step 7 in fc; "
                      "a NaN or inf reached the weights' gradients")


@pytest.mark.parametrize("verdict", ["borderline", "no-data", "collapsed"])
def test_verdicts_without_rules_get_no_advice(verdict):
    assert verdict not in RULES
    assert suggest(row(verdict, p50=1.0), {"residual": False}, {}, THRESHOLDS) == ("", "")
