"""The comparison verdict: which run trains better, by how much, and what in the gradient flow differs.

``compare_runs(runs)`` reads stored runs (no torch) and returns a :class:`Comparison`: a
headline of one or two sentences with numbers (what a report opens with and the terminal ends
with), one summary line per run, and the figures behind them.

- **Which trains better** is decided on held-out accuracy (the last evaluation), then on the
  final training loss (the mean of the last tenth of the steps, which smooths batch noise).
  A gap smaller than ``min_acc_gap`` (or than the spread of the seeds, where several seeds of
  one model are given) is called a tie.
- **Why** looks, in this order, for a difference in run verdicts (non-finite, vanishing or
  exploding dL/dh, collapsed representations: :mod:`gradlab.analysis.diagnose`,
  :mod:`gradlab.analysis.collapse`), and says plainly when the norms do not explain the gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gradlab.analysis.collapse import CLASS_METRIC, FORWARD_METRIC, finding_words, similarity_findings
from gradlab.analysis.diagnose import diagnose_run
from gradlab.analysis.grids import step_series
from gradlab.analysis.phase_stats import run_had_nonfinite
from gradlab.common import metrics as M

# Held-out accuracy: the training loop's evaluation writes it to the step table; the metric
# schema does not list it (it is no recorder or per-step trainer metric).

#: Run verdicts from the most to the least severe.
RUN_VERDICTS = ("non-finite", "exploding", "vanishing", "stalled", "collapsed", "borderline", "healthy",
                "no-data")

#: A run whose training loss over its last tenth is at least this fraction of its loss over its
#: first tenth has not learned: ``stalled``, whatever its gradient flow looks like.
STALLED_LOSS_FRACTION = 0.95

_SEVERITY = {v: i for i, v in enumerate(RUN_VERDICTS)}


@dataclass
class RunSummary:
    """One run's figures for the comparison."""

    name: str
    model: str
    seed: Any
    status: str
    verdict: str  # see RUN_VERDICTS
    why: str  # the evidence behind the verdict, in words
    eval_acc: float  # last held-out accuracy (NaN when never evaluated)
    final_loss: float  # mean training loss over the last tenth of the steps
    first_loss: float  # ... and over the first tenth
    chance: float  # 1 / classes (NaN when unknown)
    steps_done: int | None
    wall_time_s: float | None
    decades_per_layer: dict[str, float] = field(default_factory=dict)  # phase -> dL/dh fit
    class_cos: dict[str, float] = field(default_factory=dict)  # phase -> same-class dL/dh cosine, upper layers
    batch_cos: dict[str, float] = field(default_factory=dict)  # phase -> forward batch cosine, upper layers
    nonfinite_first: dict[str, Any] | None = None
    reused: bool | None = None  # set by the caller that trained or reused it
    group: str = ""  # runs with equal settings but the seed are pooled under this key
    collapsed: bool = False  # the last phase's same-class dL/dh cosine says collapsed

    @property
    def stalled(self) -> bool:
        """Whether the training loss ended at 95% or more of where it started."""
        return bool(np.isfinite(self.final_loss) and np.isfinite(self.first_loss) and self.first_loss > 0
                    and self.final_loss >= STALLED_LOSS_FRACTION * self.first_loss)


@dataclass
class Comparison:
    """What :func:`compare_runs` found."""

    runs: list[RunSummary]
    better: str | None  # the name of the run (or model, across seeds) that trains better; None: a tie
    headline: str
    lines: list[str]


def _final_loss(series: dict) -> float:
    if M.LOSS not in series:
        return float("nan")
    _, v = series[M.LOSS]
    tail = v[-max(1, len(v) // 10):]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def _first_loss(series: dict) -> float:
    if M.LOSS not in series:
        return float("nan")
    _, v = series[M.LOSS]
    head = v[:max(1, len(v) // 10)]
    head = head[np.isfinite(head)]
    return float(head.mean()) if head.size else float("nan")


def _last(series: dict, name: str) -> float:
    if name not in series:
        return float("nan")
    _, v = series[name]
    return float(v[-1]) if len(v) else float("nan")


def _flow_metric(diag: pd.DataFrame) -> str | None:
    for metric in M.PROFILE_SIGNALS:
        if (diag["metric"] == metric).any():
            return metric
    return None


def summarize(run: Any) -> RunSummary:
    """The figures of one stored run (a :class:`gradlab.store.Run`)."""
    meta = run.meta if isinstance(run.meta, dict) else {}
    series = step_series(run.steps)
    diag = diagnose_run(run)
    findings = similarity_findings(run)
    classes = (meta.get("data") or {}).get("num_classes")
    summary = RunSummary(
        name=run.name, model=str(meta.get("model") or run.name), seed=meta.get("seed"),
        status=str(getattr(run, "status", meta.get("status"))), verdict="no-data", why="",
        eval_acc=_last(series, M.EVAL_ACC), final_loss=_final_loss(series), first_loss=_first_loss(series),
        chance=1.0 / classes if isinstance(classes, int) and classes > 0 else float("nan"),
        steps_done=meta.get("steps_done"), wall_time_s=meta.get("wall_time_s"),
        nonfinite_first=meta.get("nonfinite_first") if isinstance(meta.get("nonfinite_first"), dict) else None,
    )
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    summary.group = repr(sorted((k, repr(v)) for k, v in spec.items() if k not in ("seed", "extra"))) \
        if spec else summary.name
    metric = _flow_metric(diag) if len(diag) else None
    flow = diag[diag["metric"] == metric] if metric else diag.iloc[0:0]
    for row in flow.itertuples(index=False):
        summary.decades_per_layer[row.phase] = float(row.decades_per_layer)
    for f in findings:
        if f["signal"] == FORWARD_METRIC:
            summary.batch_cos[f["phase"]] = f["value"]
        elif f["signal"] == CLASS_METRIC:
            summary.class_cos[f["phase"]] = f["value"]
    late = [f for f in findings if f["signal"] == CLASS_METRIC]
    summary.collapsed = bool(late) and late[-1]["verdict"] == "collapsed"
    summary.verdict, summary.why = _run_verdict(meta, flow, findings)
    if summary.stalled and _SEVERITY[summary.verdict] > _SEVERITY["stalled"]:
        summary.why = (f"training loss {summary.final_loss:.2f} at the end against {summary.first_loss:.2f} at "
                       f"the start" + (f"; {summary.why}" if summary.verdict != "healthy" else ""))
        summary.verdict = "stalled"
    return summary


def _run_verdict(meta: dict[str, Any], flow: pd.DataFrame, findings: list[dict[str, Any]]) -> tuple[str, str]:
    """The run's verdict: non-finite if any step was; else the most severe verdict of the last
    phase among the dL/dh profile and the collapse finding."""
    if run_had_nonfinite(meta) or (len(flow) and (flow["verdict"] == "non-finite").any()):
        first = meta.get("nonfinite_first") if isinstance(meta.get("nonfinite_first"), dict) else {}
        where = f"at step {first['step']}" if first.get("step") is not None else ""
        if first.get("layer"):
            where += f" in {first['layer']}"
        what = "stopped on" if meta.get("status") == "failed" else "met"
        return "non-finite", f"{what} a non-finite value {where}".strip()
    candidates: list[tuple[str, str]] = []
    if len(flow):
        last = flow[flow["phase"] == flow["phase"].iloc[-1]].iloc[0]
        candidates.append((str(last["verdict"]), f"{last['metric']} {last['phase']}: {last['evidence']}"))
    late = [f for f in findings if f["signal"] == CLASS_METRIC]
    if late:
        f = late[-1]
        candidates.append((f["verdict"], finding_words(f)))
    if not candidates:
        return "no-data", "nothing recorded to diagnose"
    return min(candidates, key=lambda c: _SEVERITY.get(c[0], len(RUN_VERDICTS)))


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _group(summaries: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs pooled across seeds, keyed by a display name (the model, or the run's name when one
    model appears under several settings)."""
    by_key: dict[str, list[RunSummary]] = {}
    for s in summaries:
        by_key.setdefault(s.group or s.name, []).append(s)
    models = [rs[0].model for rs in by_key.values()]
    out: dict[str, list[RunSummary]] = {}
    for rs in by_key.values():
        label = rs[0].model if models.count(rs[0].model) == 1 else rs[0].name
        out[label] = rs
    return out


def _score(runs: list[RunSummary]) -> tuple[float, float, float]:
    """(mean held-out accuracy, spread across seeds, mean final loss) of one model's runs."""
    accs = np.array([r.eval_acc for r in runs], dtype=float)
    losses = np.array([r.final_loss for r in runs], dtype=float)
    finite = accs[np.isfinite(accs)]
    acc = float(finite.mean()) if finite.size else float("nan")
    spread = float(np.ptp(finite)) if finite.size > 1 else 0.0
    fl = losses[np.isfinite(losses)]
    return acc, spread, float(fl.mean()) if fl.size else float("nan")


def compare_runs(runs: Sequence[Any], *, min_acc_gap: float = 0.03, min_loss_gap: float = 0.05,
                 reused: Sequence[bool] | None = None) -> Comparison:
    """Compare stored runs: which trains better and what differs in their gradient flow.

    Runs of the same model with different seeds are pooled (mean, with the spread across seeds
    stated). Held-out accuracies closer than ``min_acc_gap`` (or the seeds' spread) are level;
    then a final training loss lower by ``min_loss_gap`` (relative) or more decides.
    ``reused`` marks which runs were reused rather than trained (for the summary lines).
    """
    summaries = [summarize(r) for r in runs]
    if reused is not None:
        for s, r in zip(summaries, reused):
            s.reused = bool(r)
    lines = [_run_line(s) for s in summaries]
    if not summaries:
        return Comparison([], None, "No run to compare.", [])
    groups = _group(summaries)
    if len(groups) < 2:
        (label, members), = groups.items()
        s = members[0]
        acc, spread, loss = _score(members)
        headline = (f"{label}: held-out accuracy {_fmt(acc)}"
                    + (f" (spread {spread:.2f} over {len(members)} seeds)" if len(members) > 1 else "")
                    + f", final training loss {_fmt(loss)}; verdict {s.verdict}: {s.why}.")
        return Comparison(summaries, None, headline, lines)
    scores = {m: _score(rs) for m, rs in groups.items()}
    ranked = sorted(groups, key=lambda m: (-np.nan_to_num(scores[m][0], nan=-1.0),
                                           np.nan_to_num(scores[m][2], nan=np.inf)))
    best, worst = ranked[0], ranked[-1]
    (a1, sp1, l1), (a2, sp2, l2) = scores[best], scores[worst]
    gap = a1 - a2 if np.isfinite(a1) and np.isfinite(a2) else float("nan")
    noise = max(min_acc_gap, sp1, sp2)
    seeds = max(len(groups[best]), len(groups[worst]))
    seed_note = f", spread over {seeds} seeds {max(sp1, sp2):.2f}" if seeds > 1 else ""
    chance = summaries[0].chance
    chance_note = f"; chance {chance:.2f}" if np.isfinite(chance) else ""
    better: str | None = None
    if np.isfinite(gap) and gap > noise:
        better = best
        first = (f"{best} trains better than {worst}: held-out accuracy {_fmt(a1)} vs {_fmt(a2)}"
                 f"{chance_note}{seed_note}; final training loss {_fmt(l1)} vs {_fmt(l2)}.")
    else:
        # Held-out accuracy is level: the training loss may still tell them apart.
        by_loss = sorted((best, worst), key=lambda m: np.nan_to_num(scores[m][2], nan=np.inf))
        lo, hi = scores[by_loss[0]][2], scores[by_loss[1]][2]
        if np.isfinite(lo) and np.isfinite(hi) and hi - lo > min_loss_gap * hi:
            better, best, worst = by_loss[0], by_loss[0], by_loss[1]
            (a1, _, l1), (a2, _, l2) = scores[best], scores[worst]
            first = (f"{best} trains better than {worst} by training loss: {_fmt(l1)} vs {_fmt(l2)} "
                     f"at the end; held-out accuracy is level ({_fmt(a1)} vs {_fmt(a2)}"
                     f"{chance_note}{seed_note}).")
        else:
            first = (f"Neither {best} nor {worst} trains clearly better: held-out accuracy {_fmt(a1)} vs "
                     f"{_fmt(a2)}{chance_note}{seed_note}; final training loss {_fmt(l1)} vs {_fmt(l2)}.")
    second = _why(groups[best][0], groups[worst][0])
    return Comparison(summaries, better, f"{first} {second}", lines)


def _why(first: RunSummary, second: RunSummary) -> str:
    """What in the gradient flow differs between two runs, with numbers (``first`` is the one
    that trains better, or either when neither does)."""
    def dpl(s: RunSummary, phase: str) -> str:
        v = s.decades_per_layer.get(phase, float("nan"))
        return "n/a" if not np.isfinite(v) else f"{v:+.3f}"

    norms = (f"dL/dh changes {dpl(second, 'init')} decades per layer toward the input in {second.name} "
             f"vs {dpl(first, 'init')} in {first.name} at init, {dpl(second, 'late')} vs "
             f"{dpl(first, 'late')} late")
    broken = [s for s in (second, first) if s.verdict == "non-finite"]
    if broken and len(broken) == 1:
        return f"{broken[0].name} {broken[0].why}."
    flow = ("vanishing", "exploding")
    if (first.verdict in flow) != (second.verdict in flow) or (
            first.verdict in flow and first.verdict != second.verdict):
        named = [f"{s.name}'s gradient is {s.verdict}" for s in (second, first) if s.verdict in flow]
        healthy = [f"{s.name}'s is {s.verdict}" for s in (second, first) if s.verdict not in flow]
        return f"{'; '.join(named + healthy)}: {norms}."
    phase = "late" if "late" in first.class_cos and "late" in second.class_cos else None
    collapse = ""
    if phase is not None:
        collapse = (f"same-class dL/dh cosine of the upper layers {second.class_cos[phase]:.2f} in "
                    f"{second.name} vs {first.class_cos[phase]:.2f} in {first.name} late")
        collapsed = [s for s in (second, first) if s.collapsed]
        if len(collapsed) == 1:
            bad = collapsed[0]
            good = first if bad is second else second
            init = ""
            if "init" in bad.class_cos and "init" in good.class_cos:
                init = (f"; at init it was {bad.class_cos['init']:.3f} vs {good.class_cos['init']:.3f}")
            return (f"The gradient norms do not explain it ({norms}); the representation does: "
                    f"{bad.name} collapsed: its upper layers no longer depend on the input, so every "
                    f"example of a class gets nearly the same gradient ({collapse}{init}).")
    stalled = [s for s in (second, first) if s.stalled]
    if len(stalled) == 1:
        bad = stalled[0]
        measured = f", nor does the same-class dL/dh cosine ({collapse})" if collapse else ""
        return (f"{bad.name} stalled (training loss {bad.final_loss:.2f} at the end against "
                f"{bad.first_loss:.2f} at the start); the gradient norms do not explain it ({norms}){measured}.")
    tail = (f"; {collapse}" if collapse
            else "; record with --metrics all to measure representation collapse")
    return f"By the gradient norms the two look alike ({norms}){tail}."


def _run_line(s: RunSummary) -> str:
    how = {True: "reused", False: "trained"}.get(s.reused, "")  # type: ignore[arg-type]
    wall = f"{s.wall_time_s:.0f} s" if isinstance(s.wall_time_s, (int, float)) else "n/a"
    parts = [f"{s.name}:", f"{s.verdict},", f"held-out acc {_fmt(s.eval_acc)},",
             f"loss {_fmt(s.final_loss)},", f"{wall}"]
    if how:
        parts.append(f"({how})")
    return " ".join(parts)


def format_comparison(c: Comparison) -> str:
    """The terminal's closing summary: one line per run, then the headline."""
    return "\n".join([*c.lines, "", c.headline])
