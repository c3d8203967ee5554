"""One figure per experiment that makes its point across the grid, and its finding in words.

Each experiment in ``experiments/`` has a summary here, chosen by the ``experiment`` name the
runs carry in their settings (``spec.extra.experiment``). A summary reads only what the runs
stored (diagnosis, held-out accuracy, status, the stored mean-field prediction); a run that
lacks a number is left out of the figure, never guessed. An experiment without a summary
gets the comparison headline instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradlab.analysis.diagnose import diagnose_profile, model_traits
from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.facts import RunFacts, num, run_facts
from gradlab.report.lead import Headline
from gradlab.report.style import PALETTE, Section, base_layout, ptext

_DEPTH = re.compile(r"^(?:tv:)?[a-z_]+?(\d+)")


def experiment_name(views: Sequence[RunView]) -> str | None:
    """The experiment every run belongs to, or None when they differ or do not say."""
    names = set()
    for v in views:
        spec = v.meta.get("spec")
        extra = spec.get("extra") if isinstance(spec, dict) else None
        names.add(extra.get("experiment") if isinstance(extra, dict) else None)
    return names.pop() if len(names) == 1 else None


def _setting(view: RunView, key: str, default: Any = None) -> Any:
    spec = view.meta.get("spec")
    return spec.get(key, default) if isinstance(spec, dict) else default


class _Point:
    """One run as a summary sees it: its facts, its settings and what the net is made of."""

    def __init__(self, view: RunView):
        self.view = view
        self.facts: RunFacts = run_facts(view)
        self.model = str(_setting(view, "model") or view.meta.get("model") or view.label)
        traits = model_traits(view.meta)
        self.norm = bool(traits["normalised"])
        self.residual = bool(traits["residual"])
        self.act = str(traits["act"] or "relu")
        self.init = str(traits["init"] or "default")
        base = self.model.partition(":")[0]
        self.family = re.sub(r"\d+$", "", base.removeprefix("tv:"))
        m = _DEPTH.match(base)
        self.depth = int(m.group(1)) if m else 0
        self.net = base
        self.lr = float(_setting(view, "lr", math.nan))
        self.clip = str(_setting(view, "clip", "none"))
        self.steps = int(_setting(view, "steps", 0) or view.meta.get("num_steps") or 0)

    def decades(self, phase: str = "init") -> float:
        return self.facts.decades.get(phase, math.nan) if self.facts.signal == M.ACT_GRAD_NORM else math.nan

    def steps_done(self) -> int:
        done = self.view.meta.get("steps_done")
        return int(done) if isinstance(done, (int, float)) else self.steps


def _span(values: Sequence[float], digits: int = 3) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    lo, hi = min(vals), max(vals)
    return num(lo, digits) if num(lo, digits) == num(hi, digits) else f"{num(lo, digits)} to {num(hi, digits)}"


def _section(title: str, intro: str, fig: go.Figure, height: int) -> Section:
    base_layout(fig, height=height)
    return Section("summary", title, intro, fig)


# -- plain vs residual ------------------------------------------------------------------------
def plain_vs_residual(views: Sequence[RunView]) -> Headline:
    points = [_Point(v) for v in views]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["at initialisation", "late in training"],
                        horizontal_spacing=0.08)
    groups = [(False, False, "plain, no BN"), (True, False, "residual, no BN"),
              (False, True, "plain, BN"), (True, True, "residual, BN")]
    for gi, (residual, norm, name) in enumerate(groups):
        group = sorted((p for p in points if p.residual == residual and p.norm == norm), key=lambda p: p.depth)
        # CIFAR nets (6n+2 layers) and ImageNet-style nets are separate lines: their stems differ.
        families = [[p for p in group if (p.depth - 2) % 6 == 0], [p for p in group if (p.depth - 2) % 6 != 0]]
        for fi, pts in enumerate(f for f in families if f):
            for col, phase in ((1, "init"), (2, "late")):
                y = [p.decades(phase) for p in pts]
                fig.add_trace(go.Scatter(
                    x=[p.depth for p in pts], y=y, mode="lines+markers", name=ptext(name), legendgroup=name,
                    showlegend=col == 1 and fi == 0, line=dict(color=PALETTE[gi], dash="solid" if norm else "dash"),
                    marker=dict(size=9, symbol="circle" if residual else "square"),
                    customdata=[[ptext(p.model), ptext(num(p.facts.ratio.get(phase, math.nan), 2))] for p in pts],
                    hovertemplate="<b>%{customdata[0]}</b><br>%{y:.3f} decades lost per layer"
                                  "<br>first/last %{customdata[1]}<extra></extra>"), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="depth (layers in the net's name)", row=1, col=col)
        fig.update_yaxes(title_text="dL/dh: decades lost per weight layer" if col == 1 else None,
                         zeroline=True, row=1, col=col)
    plain = [p for p in points if not p.residual and not p.norm]
    res = [p for p in points if p.residual and not p.norm]
    bn = [p for p in points if p.norm]
    deepest = max(plain, key=lambda p: p.depth, default=None)
    text = (f"Without BatchNorm the plain nets lose {_span([p.decades() for p in plain])} decades of "
            f"dL/dh per weight layer at init")
    if deepest is not None:
        ratio = deepest.facts.ratio.get("init", math.nan)
        text += (f" ({deepest.net}: the input-side gradient underflows to 0.0 in float32)" if ratio == 0
                 else f" ({deepest.net}: first/last {num(ratio, 2)})")
    text += (f", their residual twins {_span([p.decades() for p in res])}. With BN no net loses it at "
             f"init ({_span([p.decades() for p in bn])} decades per layer; negative = growing toward the input).")
    section = _section("Decades lost per layer against depth, by architecture and normalisation",
                       "Each point is one run: the fitted slope of log10 dL/dh per weight layer "
                       "(positive = the gradient shrinks toward the input). Squares: plain nets, "
                       "circles: residual nets; dashed: without BN.", fig, 420)
    sections = [section]
    degradation = _degradation(points)
    if degradation is not None:
        words, loss_section = degradation
        text += " " + words
        sections.append(loss_section)
    return Headline(text, [], sections, kind="experiment")


def _degradation(points: Sequence[_Point]) -> tuple[str, Section] | None:
    """He et al.'s Fig. 6 at this budget: the final training loss of the BN nets against depth.

    Degradation is the deeper plain net ending with a higher training loss than the shallower
    one, while the deeper residual net ends lower. Needs two depths of each (CIFAR nets).
    """
    bn = [p for p in points if p.norm and (p.depth - 2) % 6 == 0 and p.facts.final_loss == p.facts.final_loss]
    plain = sorted((p for p in bn if not p.residual), key=lambda p: p.depth)
    res = sorted((p for p in bn if p.residual), key=lambda p: p.depth)
    if len(plain) < 2 or len(res) < 2:
        return None
    fig = go.Figure()
    for gi, (name, pts) in enumerate((("plain, BN", plain), ("residual, BN", res))):
        fig.add_trace(go.Scatter(
            x=[p.depth for p in pts], y=[p.facts.final_loss for p in pts], mode="lines+markers",
            name=name, line=dict(color=PALETTE[2 + gi]),
            marker=dict(size=10, symbol="square" if gi == 0 else "circle"),
            customdata=[[ptext(p.model), p.steps_done()] for p in pts],
            hovertemplate="<b>%{customdata[0]}</b><br>training loss %{y:.3f} at the end "
                          "(step %{customdata[1]})<extra></extra>"))
    fig.update_xaxes(title_text="depth (layers in the net's name)")
    fig.update_yaxes(title_text="final training loss (mean of the last tenth of the steps)")
    (p0, p1), (r0, r1) = (plain[0], plain[-1]), (res[0], res[-1])
    plain_worse = p1.facts.final_loss > p0.facts.final_loss
    res_better = r1.facts.final_loss < r0.facts.final_loss
    figures = (f"{p1.net} {p1.facts.final_loss:.3f} vs {p0.net} {p0.facts.final_loss:.3f}; "
               f"{r1.net} {r1.facts.final_loss:.3f} vs {r0.net} {r0.facts.final_loss:.3f}")
    if plain_worse and res_better:
        words = (f"With BN, the deeper plain net ends with the higher training loss and the deeper "
                 f"residual net with the lower one: degradation, as in He et al.'s Fig. 6 ({figures}).")
    else:
        words = (f"He et al.'s degradation (the deeper plain net trains worse, the deeper residual net "
                 f"better) {'half shows' if plain_worse or res_better else 'does not show'} at this budget: "
                 f"final training loss {figures}.")
    intro = ("The ResNet paper's Fig. 6 at this budget: each point is one BN net's training loss at "
             "the end of the run. Degradation is the deeper plain net ending higher while the deeper "
             "residual net ends lower.")
    section = Section("summary-degradation", "Training loss against depth: degradation", intro, fig)
    base_layout(fig, height=360)
    return words, section


# -- clipping ---------------------------------------------------------------------------------
def _fired(view: RunView) -> float:
    if M.CLIP_FIRED not in view.series:
        return math.nan
    v = view.series[M.CLIP_FIRED][1]
    v = v[np.isfinite(v)]
    return float((v > 0).mean()) if v.size else math.nan


def clipping(views: Sequence[RunView]) -> Headline:
    points = [_Point(v) for v in views]
    methods = sorted(dict.fromkeys(p.clip for p in points), key=lambda m: m != "none")  # unclipped first
    rates = sorted({p.lr for p in points}, reverse=True)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=["share of the planned steps survived",
                                        "firing rate (share of recorded steps clipped)"])
    for i, lr in enumerate(rates):
        pts = {p.clip: p for p in points if p.lr == lr}
        x = [m for m in methods if m in pts]
        survived = [pts[m].steps_done() / max(pts[m].steps, 1) for m in x]
        fired = [_fired(pts[m].view) for m in x]
        custom = [[ptext(pts[m].facts.nonfinite_step if pts[m].facts.stopped else "-"), pts[m].steps_done()]
                  for m in x]
        for col, y in ((1, survived), (2, fired)):
            fig.add_trace(go.Bar(x=[ptext(m) for m in x], y=y, name=ptext(f"lr {lr:g}"), legendgroup=str(lr),
                                 showlegend=col == 1, marker_color=PALETTE[i], customdata=custom,
                                 hovertemplate="%{x}<br>%{y:.0%}<br>steps done %{customdata[1]}"
                                               "<br>non-finite at step %{customdata[0]}<extra></extra>"),
                          row=1, col=col)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05])
    fig.update_xaxes(title_text="clipping method")
    fig.update_layout(barmode="group")
    top = rates[0] if rates else math.nan
    at_top = [p for p in points if p.lr == top]
    survive = [p for p in at_top if not p.facts.stopped and p.clip != "none"]
    died = [p for p in at_top if p.facts.stopped and p.clip != "none"]
    bare = next((p for p in at_top if p.clip == "none"), None)
    text = f"At lr {top:g}"
    if bare is not None:
        text += (f" the unclipped run stops with a non-finite value at step {bare.facts.nonfinite_step};"
                 if bare.facts.stopped else " the unclipped run survives;")
    text += (f" {len(survive)} of {len(survive) + len(died)} clipping settings survive all "
             f"{max((p.steps for p in at_top), default=0)} steps")
    if died:
        text += " (" + ", ".join(f"{p.clip} stops at step {p.facts.nonfinite_step}" for p in died) + ")"
    text += "."
    low = [p for p in points if p.lr != top]
    if low:
        rates_low = [100 * _fired(p.view) for p in low if p.clip != "none"]
        finished = all(not p.facts.stopped for p in low)
        text += (f" At lr {min(p.lr for p in low):g} {'every run finishes' if finished else 'some runs stop'}; "
                 f"the methods clip on {_span(rates_low, 2)}% of the recorded steps.")
    section = _section("Survival and firing rate by clipping method",
                       "Left: how much of the planned training each run completed before a "
                       "non-finite value stopped it. Right: how often the method clipped.", fig, 420)
    return Headline(text, [], [section], kind="experiment")


# -- initialisation ---------------------------------------------------------------------------
FLOAT32_RANGE = (1.18e-38, 3.4e38)  # smallest normal and largest float32 numbers


def _prediction(view: RunView) -> np.ndarray:
    pred = view.meta.get("meanfield")
    if not isinstance(pred, list):
        return np.array([])
    return np.array([float(p.get("pred_rel", math.nan)) for p in pred if isinstance(p, dict)])


def predicted_decades(view: RunView) -> float:
    """Decades lost per weight layer of the run's stored mean-field prediction (NaN without one)."""
    rel = _prediction(view)
    if rel.size < 2:
        return math.nan
    return float(diagnose_profile(np.arange(rel.size, dtype=float), rel)["decades_per_layer"])


def predicted_in_range(view: RunView) -> bool:
    """Whether the predicted first/last ratio is a normal float32 number (else the measurement
    cannot be: it underflows to 0.0 or overflows to inf)."""
    rel = _prediction(view)
    if rel.size < 2 or not rel[-1] > 0:
        return False
    ratio = rel[0] / rel[-1]
    return bool(FLOAT32_RANGE[0] <= ratio <= FLOAT32_RANGE[1])


def initialisation(views: Sequence[RunView]) -> Headline:
    points = [_Point(v) for v in views]
    inits = list(dict.fromkeys(p.init for p in points))
    fig = go.Figure()
    pairs = []
    for i, init in enumerate(inits):
        pts = [p for p in points if p.init == init]
        xy = [(predicted_decades(p.view), p.decades("init"), p) for p in pts]
        xy = [(x, y, p) for x, y, p in xy if x == x and y == y and predicted_in_range(p.view)]
        pairs += xy
        if not xy:
            continue
        fig.add_trace(go.Scatter(
            x=[x for x, _, _ in xy], y=[y for _, y, _ in xy], mode="markers", name=ptext(init),
            marker=dict(size=11, color=PALETTE[i % len(PALETTE)],
                        symbol=["circle" if p.depth <= 20 else "square" for _, _, p in xy]),
            customdata=[ptext(p.model) for _, _, p in xy],
            hovertemplate="<b>%{customdata}</b><br>predicted %{x:.3f}<br>measured %{y:.3f}<extra></extra>"))
    if pairs:
        lo = min(min(x, y) for x, y, _ in pairs) - 0.05
        hi = max(max(x, y) for x, y, _ in pairs) + 0.05
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="measured = predicted",
                                 line=dict(color="#888", dash="dot", width=1), hoverinfo="skip"))
    fig.update_xaxes(title_text="mean-field prediction: decades lost per weight layer")
    fig.update_yaxes(title_text="measured at init: decades lost per weight layer")
    without = [p for p in points if not p.norm and not p.residual]
    outside = [p for p in without if predicted_decades(p.view) == predicted_decades(p.view)
               and not predicted_in_range(p.view)]
    if pairs:
        worst = max(abs(x - y) for x, y, _ in pairs)
        text = (f"In the {len(pairs)} plain nets without normalisation whose predicted first/last ratio fits "
                "in float32, the "
                f"measured decay of dL/dh at init follows the mean-field prediction within {worst:.3f} decades "
                f"per layer, from {_span([y for _, y, _ in pairs])} decades per layer across "
                f"{len({p.init for _, _, p in pairs})} inits.")
    else:
        text = "No run stored a mean-field prediction with a measured decay to compare it with."
    if outside:
        text += (f" {len(outside)} predicted first/last ratio{'s' if len(outside) > 1 else ''} leave that "
                 "range (" + ", ".join(p.model for p in outside) + "): there the measurement is 0.0 or non-finite.")
    normed = [p for p in points if p.norm]
    if normed:
        text += (f" With BN the decay at init is {_span([p.decades() for p in normed])} decades per layer "
                 "for every init.")
    section = _section("Measured against mean-field prediction, by initialisation",
                       "Each point is a plain net without normalisation (circles: depth 20, squares: "
                       "deeper). On the dotted line the measurement equals the prediction stored "
                       "with the run.", fig, 460)
    return Headline(text, [], [section], kind="experiment")


# -- sigmoid vs relu --------------------------------------------------------------------------
def sigmoid_vs_relu(views: Sequence[RunView]) -> Headline:
    points = [_Point(v) for v in views]
    nets = list(dict.fromkeys(p.net for p in points))
    acts = list(dict.fromkeys(p.act for p in points))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["without normalisation", "with BatchNorm"],
                        horizontal_spacing=0.08, shared_yaxes=True)
    for i, act in enumerate(acts):
        for col, norm in ((1, False), (2, True)):
            pts = {p.net: p for p in points if p.act == act and p.norm == norm}
            x = [n for n in nets if n in pts]
            fig.add_trace(go.Bar(
                x=[ptext(n) for n in x], y=[10 ** pts[n].decades() for n in x], name=ptext(act),
                legendgroup=act, showlegend=col == 1, marker_color=PALETTE[i],
                customdata=[[ptext(pts[n].model), num(pts[n].decades(), 3)] for n in x],
                hovertemplate="<b>%{customdata[0]}</b><br>dL/dh shrinks %{y:.3g}x per layer"
                              "<br>(%{customdata[1]} decades)<extra></extra>"), row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="dL/dh factor lost per weight layer at init", row=1, col=1)
    fig.add_hline(y=1, line=dict(color="#888", dash="dot", width=1))
    bare = [p for p in points if not p.norm]

    def factor(act: str) -> str:
        vals = [10 ** p.decades() for p in bare if p.act == act and not p.residual]
        return _span(vals, 2) + "x"

    text = "Without normalisation dL/dh shrinks per weight layer at init by " + ", ".join(
        f"{factor(a)} with {a}" for a in acts) + " (MLP and plain nets)"
    normed = [p for p in points if p.norm]
    if normed:
        text += (f"; BatchNorm brings every activation to {_span([10 ** p.decades() for p in normed], 2)}x "
                 "per layer.")
    else:
        text += "."
    section = _section("Per-layer factor of dL/dh: sigmoid, tanh and ReLU",
                       "The factor by which the back-propagated gradient shrinks per weight layer at "
                       "init (10 to the fitted decades per layer; 1 = kept). Log scale.", fig, 420)
    return Headline(text, [], [section], kind="experiment")


# -- batchnorm --------------------------------------------------------------------------------
def batchnorm(views: Sequence[RunView]) -> Headline:
    points = [_Point(v) for v in views]
    models = list(dict.fromkeys(p.model for p in points))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=["held-out accuracy (x: stopped by a non-finite value)",
                                        "training loss, last steps"])
    stable: dict[str, float] = {}
    for i, model in enumerate(models):
        pts = sorted((p for p in points if p.model == model), key=lambda p: p.lr)
        ok = [p for p in pts if not p.facts.stopped]
        bad = [p for p in pts if p.facts.stopped]
        stable[model] = max((p.lr for p in ok), default=math.nan)
        colour = PALETTE[i]
        for col, get in ((1, lambda p: p.facts.eval_acc), (2, lambda p: p.facts.final_loss)):
            fig.add_trace(go.Scatter(
                x=[p.lr for p in ok], y=[get(p) for p in ok], mode="lines+markers", name=ptext(model),
                legendgroup=model, showlegend=col == 1,
                line=dict(color=colour, dash="dash" if not any(q.norm for q in pts) else "solid"),
                hovertemplate=f"<b>{ptext(model)}</b><br>lr %{{x:g}}<br>%{{y:.3f}}<extra></extra>"), row=1, col=col)
        if bad:
            fig.add_trace(go.Scatter(
                x=[p.lr for p in bad], y=[0.0] * len(bad), mode="markers", name=ptext(f"{model}: stopped"),
                legendgroup=model, showlegend=False, marker=dict(symbol="x", size=14, color=colour),
                customdata=[p.facts.nonfinite_step for p in bad],
                hovertemplate=(f"<b>{ptext(model)}</b><br>lr %{{x:g}}: "
                               "non-finite at step %{customdata}<extra></extra>")),
                row=1, col=1)
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(title_text="held-out accuracy", row=1, col=1)
    fig.update_yaxes(title_text="training loss", row=1, col=2)
    rates = sorted({p.lr for p in points})
    top = rates[-1] if rates else math.nan
    words = {p.model: f"{p.net} {'with' if p.norm else 'without'} BN" for p in points}
    finite_all = [words[m] for m, lr in stable.items() if lr == top]
    parts = []
    for model, lr in stable.items():
        if lr != top:
            first_bad = min((p.lr for p in points if p.model == model and p.facts.stopped), default=math.nan)
            parts.append(f"{words[model]} diverges at lr {first_bad:g} (finite up to {lr:g})")
    if finite_all:
        parts.append(", ".join(finite_all) + f" stay{'s' if len(finite_all) == 1 else ''} finite up to "
                     f"lr {top:g}, the largest tried")
    best = max((p for p in points if p.facts.eval_acc == p.facts.eval_acc), key=lambda p: p.facts.eval_acc,
               default=None)
    text = "Largest stable learning rate: " + "; ".join(parts) + "."
    if best is not None:
        text += (f" The best held-out accuracy is {best.facts.eval_acc:.3f} ({words[best.model]}, lr {best.lr:g}); "
                 "without BN the best is "
                 f"{max((p.facts.eval_acc for p in points if not p.norm), default=math.nan):.3f}.")
    section = _section("BN against no BN: which learning rates stay finite, and which learn",
                       "Left: held-out accuracy against the learning rate (crosses on the axis: the run "
                       "stopped on a non-finite value). Right: the mean training loss of the last steps. "
                       "Dashed: without BN.", fig, 440)
    return Headline(text, [], [section], kind="experiment")


SUMMARIES: dict[str, Callable[[Sequence[RunView]], Headline]] = {
    "plain_vs_residual": plain_vs_residual,
    "clipping": clipping,
    "initialisation": initialisation,
    "sigmoid_vs_relu": sigmoid_vs_relu,
    "batchnorm": batchnorm,
}


def experiment_summary(views: Sequence[RunView]) -> Headline | None:
    """The headline and summary figure of an experiment, or None for other reports."""
    name = experiment_name(views)
    if name is None or name not in SUMMARIES or len(views) < 2:
        return None
    return SUMMARIES[name](views)
