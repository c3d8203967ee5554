"""What to try, and why: the suggestion of a diagnosis row as a table of rules.

Each :class:`Rule` belongs to one verdict and says when it applies (from the row's numbers and
the network's traits), the change to try and the reason. The driver, :func:`suggest`, walks the
verdict's rules in order and joins what applies. A ``fallback`` rule applies only when no rule
before it gave a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradlab.analysis.thresholds import Thresholds
from gradlab.analysis.wording import fmt


@dataclass(frozen=True)
class Evidence:
    """What a rule may look at: the diagnosis row, the network's traits, the run's meta."""

    row: dict[str, Any]
    traits: dict[str, Any]
    meta: dict[str, Any]
    t: Thresholds

    @property
    def sat(self) -> Any:
        return self.row.get("saturated_frac")

    @property
    def dead(self) -> Any:
        return self.row.get("dead_frac")

    @property
    def clip_text(self) -> str:
        """A clipping threshold near the median total norm ("" when no total norm is known)."""
        p50 = self.row["total_norm_p50"]
        if not np.isfinite(p50):
            return ""
        return f"clip the total gradient norm at about {fmt(p50)} (--clip norm:{p50:.3g})"

    @property
    def clip_why(self) -> str:
        p10, p50, p90 = self.row["total_norm_p10"], self.row["total_norm_p50"], self.row["total_norm_p90"]
        return (f"observed total norms: p10 {fmt(p10)}, median {fmt(p50)}, p90 {fmt(p90)}; "
                "a threshold near the median (0.5-10x the average norm works) cuts spikes only")


Text = Callable[[Evidence], str]


@dataclass(frozen=True)
class Rule:
    """When ``applies``, add ``advice`` (a change to try) and ``reason``; either may be empty."""

    applies: Callable[[Evidence], bool]
    advice: Text
    reason: Text
    fallback: bool = False  # applies only when no earlier rule gave a change


def _always(e: Evidence) -> bool:
    return True


def _says(text: str) -> Text:
    return lambda e: text


def _nothing(e: Evidence) -> str:
    return ""


# -- healthy --------------------------------------------------------------------------------
def _clips_most_steps(e: Evidence) -> bool:
    rate = e.row.get("clip_rate", 0)
    return bool(rate and np.isfinite(e.row["clip_rate"]) and e.row["clip_rate"] > 0.5 and e.clip_text)


# -- vanishing ------------------------------------------------------------------------------
def _saturates(e: Evidence) -> bool:
    return bool(e.traits.get("saturating") or (np.isfinite(e.sat) and e.sat >= e.t.saturated_frac))


def _saturation_why(e: Evidence) -> str:
    why = ("sigmoid's slope is at most 0.25, so each such layer shrinks the backward signal 4x "
           "(0.6 decades) or more")
    if np.isfinite(e.sat):
        why += f"; {e.sat:.0%} of units are saturated"
    return why


def _relu_with_small_init(e: Evidence) -> bool:
    return (e.traits.get("act") in ("relu", "leaky_relu") and e.traits.get("normalised") is False
            and e.traits.get("init") in ("default", "xavier_uniform", "xavier_normal"))


def _many_dead(e: Evidence) -> bool:
    return bool(np.isfinite(e.dead) and e.dead >= e.t.dead_frac)


# -- non-finite -----------------------------------------------------------------------------
def _first_nonfinite(e: Evidence) -> str:
    first = e.meta.get("nonfinite_first")
    if not (isinstance(first, dict) and first.get("step") is not None):
        return ""
    layer = first.get("layer")
    return (f"non-finite values first appeared at step {first.get('step')}"
            + (f" in {layer}" if layer is not None else "") + "; ")


def _fp16(e: Evidence) -> bool:
    spec = e.meta.get("spec") if isinstance(e.meta.get("spec"), dict) else {}
    return spec.get("amp") == "fp16"


def _unnormalised(e: Evidence) -> bool:
    return e.traits.get("normalised") is False


#: The rules of each verdict, in the order their changes are listed.
RULES: dict[str, tuple[Rule, ...]] = {
    "healthy": (
        Rule(_clips_most_steps,
             lambda e: f"raise the clipping threshold: it fired on {e.row['clip_rate']:.0%} of steps",
             lambda e: f"clipping on most steps rescales every update; {e.clip_why}"),
        Rule(_always, _says("none needed"), _says("the norm stays within the thresholds across depth"),
             fallback=True),
    ),
    "vanishing": (
        Rule(_saturates, _says("use ReLU instead of sigmoid/tanh (or add BatchNorm before them)"), _saturation_why),
        Rule(_unnormalised, _says("add BatchNorm after each convolution / hidden linear layer"),
             _says("there is no normalisation layer, so the signal's scale changes by the "
                   "same factor at every layer; with BN the backward norms stay healthy")),
        Rule(lambda e: e.traits.get("residual") is False, _says("add residual (skip) connections"),
             _says("a plain stack multiplies the per-layer factors; a skip path carries the "
                   "gradient past each block unchanged")),
        Rule(_relu_with_small_init, _says("He (Kaiming) initialisation, std = sqrt(2 / fan_in)"),
             _says("PyTorch's default and Xavier init give ReLU layers too small a gain "
                   "(variance factor below 1 per layer); He init keeps it at 1")),
        Rule(_many_dead, _says("lower the learning rate or use He initialisation"),
             lambda e: (f"{e.dead:.0%} of ReLU units are dead (0 for every example of the batch), "
                        "which cuts their gradient")),
        Rule(lambda e: bool(e.traits.get("attention")),
             _says("normalise the input of each sublayer (pre-LayerNorm), warm the learning rate up, "
                   "or initialise the residual branches' output projections smaller"),
             _says("a transformer already has a residual stream and LayerNorm; what keeps its backward "
                   "signal is where the norms sit and how large the branches start"),
             fallback=True),
        Rule(_always, _says("add residual connections or BatchNorm"),
             _says("both keep the backward signal's scale from layer to layer"), fallback=True),
    ),
    "exploding": (
        Rule(lambda e: bool(e.clip_text), lambda e: e.clip_text, lambda e: e.clip_why),
        Rule(lambda e: bool(e.row.get("clip_top_layers")), _nothing,
             lambda e: f"layers holding the norm when clipping fired: {e.row['clip_top_layers']}"),
        Rule(_unnormalised, _says("add BatchNorm"),
             _says("without normalisation the per-layer gain compounds with depth")),
        Rule(_always, _says("lower the learning rate"),
             _says("growth toward the input or over time is amplified by large steps")),
    ),
    "non-finite": (
        Rule(lambda e: bool(e.clip_text), lambda e: e.clip_text, _nothing),
        Rule(_always, _says("lower the learning rate"),
             lambda e: _first_nonfinite(e) + (e.clip_why if e.clip_text
                                              else "a NaN or inf reached the weights' gradients")),
        Rule(_fp16, _says("train in bf16 or keep a GradScaler (fp16 overflows above 65504)"), _nothing),
    ),
}


def suggest(row: dict[str, Any], traits: dict[str, Any], meta: dict[str, Any],
            t: Thresholds) -> tuple[str, str]:
    """A change to try and the reason, tied to the row's evidence (both "" for verdicts without advice)."""
    evidence = Evidence(row, traits, meta, t)
    changes: list[str] = []
    reasons: list[str] = []
    for rule in RULES.get(row["verdict"], ()):
        if (rule.fallback and changes) or not rule.applies(evidence):
            continue
        if change := rule.advice(evidence):
            changes.append(change)
        if reason := rule.reason(evidence):
            reasons.append(reason)
    return "; ".join(changes), "; ".join(reasons)
