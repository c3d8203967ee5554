"""The top of a report: a headline of one or two sentences with numbers, and its figures.

Three kinds of report get three kinds of headline:

- an experiment (every run carries the same ``experiment`` name in its settings, and that
  experiment has a summary in :mod:`gradlab.report.summaries`): the experiment's finding with
  its key number, and one figure across the grid;
- a comparison (two or more runs): which run trains better, with held-out accuracy, final
  loss and the gradient-flow difference, from :func:`gradlab.analysis.comparison.compare_runs` (the
  same words the terminal ends with);
- one run: its held-out accuracy, final loss and verdict.

Comparisons and single runs lead with the dL/dh profile per weight layer at init and late
(all runs on shared axes), the same-class dL/dh cosine where it was recorded (what shows a
collapsed representation that the norms miss), and the loss and accuracy curves.
"""

from __future__ import annotations

from collections.abc import Sequence

from gradlab.analysis.comparison import compare_runs
from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.facts import SIGNAL_WORDS, RunFacts, num, run_facts
from gradlab.report.layerpick import Keep
from gradlab.report.lead import Headline
from gradlab.report.profiles import profile_section
from gradlab.report.style import Section
from gradlab.report.summaries import experiment_summary
from gradlab.report.training import training_section

__all__ = ["Headline", "lead_sections", "make_headline", "run_text"]


def _profile_words(f: RunFacts, phase: str) -> str:
    if f.signal is None or phase not in f.decades:
        return f"{f.label}: no gradient norms recorded"
    words = f"{f.label} {num(f.decades[phase])} decades lost per layer (first/last {num(f.ratio[phase], 2)})"
    return words


def _outcome(f: RunFacts) -> str:
    parts = []
    if f.eval_acc == f.eval_acc:
        parts.append(f"held-out accuracy {f.eval_acc:.3f}")
    if f.final_loss == f.final_loss:
        parts.append(f"final training loss {f.final_loss:.3f}")
    if f.stopped:
        parts.append(f"stopped by a non-finite value at step {f.nonfinite_step}")
    return ", ".join(parts) if parts else "no loss or accuracy recorded"


def run_text(f: RunFacts) -> str:
    """The headline of a report on one run."""
    text = f"{f.label}: {_outcome(f)}."
    if f.signal is not None and f.verdict:
        phase = "late" if "late" in f.verdict else next(iter(f.verdict))
        text += (f" {SIGNAL_WORDS[f.signal]} is {f.verdict[phase]} ({phase}): "
                 f"{num(f.decades[phase])} decades lost per layer, first/last {num(f.ratio[phase], 2)}.")
    return text


def lead_sections(views: Sequence[RunView], keep: Keep | None) -> list[Section]:
    """The figures under a comparison's or a run's headline: the profile and the curves."""
    signal = next((s for s in M.PROFILE_SIGNALS if any(s in v.matrices for v in views)), None)
    out = []
    if signal is not None:
        what = M.label(signal)
        out.append(profile_section(
            views, [(signal, what)], key="headline-profile", phases=("init", "late"), keep=keep,
            title=f"Where the gradient goes: {what} per layer, at init and late",
            intro="Each run's norm against its position in the network (input on the left), on "
                  "shared axes. A line falling toward the left is a gradient that vanishes "
                  "before it reaches the input."))
    if any(M.ACT_GRAD_COS_CLASS in v.matrices for v in views):
        out.append(profile_section(
            views, [(M.ACT_GRAD_COS_CLASS, M.label(M.ACT_GRAD_COS_CLASS))], key="headline-collapse",
            phases=("init", "late"), keep=keep, log_y={M.ACT_GRAD_COS_CLASS: False},
            title="Does each layer still depend on its input? Same-class gradient cosine per layer",
            intro="The mean cosine of dL/dh between examples of the same class. Near 1, every "
                  "example of a class gets the same gradient: the layers above no longer depend "
                  "on the input (a collapsed representation), however healthy the gradient norms "
                  "look. Near 0 at init, the class structure of the backward signal is lost "
                  "(shattered gradients)."))
    out.append(training_section(views))
    return out


def make_headline(views: Sequence[RunView], keep: Keep | None) -> Headline:
    """The headline and lead figures of a report on ``views``."""
    summary = experiment_summary(views)
    if summary is not None:
        return summary
    facts = [run_facts(v) for v in views]
    if len(views) == 1:
        return Headline(run_text(facts[0]), [], lead_sections(views, keep), kind="run")
    result = compare_runs([v.run for v in views])
    return Headline(result.headline, result.lines, lead_sections(views, keep), kind="comparison")
