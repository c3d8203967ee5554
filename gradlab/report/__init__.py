"""Interactive HTML reports of stored runs: gradient flow, profiles, training, diagnosis.

Reads :class:`gradlab.store.Run` objects (pandas tables) and writes one HTML file that opens
offline from ``file://``. Never imports torch.

The page opens with its answer: a headline with numbers and the one to three figures that
carry it (an experiment's summary across its grid, or a comparison's profiles and curves).
Tables follow, collapsed where long, then the detail figures: training and evaluation curves,
depth profiles at init, early and late (weight layers by default), gradient-flow heatmaps of
``grad_norm`` and ``act_grad_norm`` (small multiples for many runs), the total gradient norm
with clipping, activation statistics, update-to-weight ratios, and where non-finite values
first appeared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plotly.offline import get_plotlyjs

from gradlab.common import metrics as M
from gradlab.common.atomic import write_text_atomic
from gradlab.errors import GradlabError
from gradlab.report import page  # called as page.render, so a test can replace the renderer
from gradlab.report.activations import activations_section
from gradlab.report.data import prepare
from gradlab.report.gradnorm import gradnorm_section
from gradlab.report.headline import make_headline
from gradlab.report.heatmaps import heatmap_section
from gradlab.report.layerpick import layer_filter
from gradlab.report.nonfinite import nonfinite_section
from gradlab.report.profiles import profile_section
from gradlab.report.training import training_section
from gradlab.store import load_run

__all__ = ["build_report", "report_from_dirs", "build_sections", "PLOTLYJS_MODES", "PLOTLYJS_FILE"]

PLOTLYJS_MODES = ("embed", "beside")
PLOTLYJS_FILE = "plotly.min.js"


def build_sections(views: Sequence[Any], *, all_layers: bool = False,
                   skip: Sequence[str] = ()) -> list:
    """The report's detail figures, in order (each a :class:`gradlab.report.style.Section`).

    ``all_layers`` draws every recorded layer in the profiles and heatmaps instead of the
    weight layers only; ``skip`` leaves out sections by key (those already drawn at the top).
    """
    keep = layer_filter(all_layers)
    which = "every recorded layer" if all_layers else "the layers with weights (convolutions and linear layers)"
    makers = [
        ("training", lambda: training_section(views)),
        ("profiles", lambda: profile_section(
            views, [(M.GRAD_NORM, M.label(M.GRAD_NORM)), (M.ACT_GRAD_NORM, M.label(M.ACT_GRAD_NORM))], keep=keep,
            key="profiles", title="Depth profiles at initialisation, early and late",
            intro="Norm against the position in the network, runs overlaid and aligned by stage and "
                  "block (so a plain net and its residual twin line up), drawn over " + which + ". "
                  "A line that falls toward the left is a gradient vanishing toward the input; early "
                  "and late profiles are per-layer medians over their steps.")),
        ("flow-grad", lambda: heatmap_section(
            views, M.GRAD_NORM, key="flow-grad", unit=f"{M.label(M.GRAD_NORM)} (log10)", keep=keep,
            title="Gradient flow: weight-gradient norm per layer and step",
            intro="Colour = log10 of each layer's weight-gradient norm (input at the bottom). A dark "
                  "band along the bottom rows is a gradient that vanishes before it reaches the "
                  "input; grey cells are exact zeros (underflow), magenta cells NaN/inf. All runs "
                  "share one colour scale.")),
        ("flow-act", lambda: heatmap_section(
            views, M.ACT_GRAD_NORM, key="flow-act", unit=f"{M.label(M.ACT_GRAD_NORM)} (log10)", keep=keep,
            title="Gradient flow: back-propagated dL/dh per layer and step",
            intro="Colour = log10 of the norm of the gradient with respect to each layer's output. "
                  "Weight gradients can look flat while this signal shrinks toward the input, so "
                  "read both. Shared colour scale.")),
        ("gradnorm", lambda: gradnorm_section(views)),
        ("activations", lambda: activations_section(views)),
        ("updates", lambda: heatmap_section(
            views, M.UPDATE_RATIO, key="updates", unit=f"{M.label(M.UPDATE_RATIO)} (log10)", keep=keep,
            title="Update-to-weight ratio per layer over time",
            intro="Colour = log10 of |step update| / |weights| per layer. Around 1e-3 is a common "
                  "rule of thumb; far below it a layer barely learns (often the layers a vanishing "
                  "gradient does not reach), far above it is unstable.")),
        ("nonfinite", lambda: nonfinite_section(views)),
    ]
    return [make() for key, make in makers if key not in skip]


def _check_out(out: str | os.PathLike[str], *, create: bool = True) -> Path:
    """Refuse an output path that cannot be written; create its directory when ``create``."""
    path = Path(out)
    if path.is_dir():
        raise GradlabError(f"output {path} is a directory; pass a file name such as {path / 'report.html'}")
    parent = path.parent
    if not create:
        existing = parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise GradlabError(f"cannot write {path}: {existing} is not a writable directory; choose a "
                               "writable path for the report")
        return path
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradlabError(f"cannot create the output directory {parent} ({exc.strerror or exc}); "
                           "choose a writable path for the report") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GradlabError(f"cannot write to {parent}; choose a writable path for the report")
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, leaving no temporary file even when killed."""
    try:
        write_text_atomic(path, text)
    except BaseException as exc:
        if isinstance(exc, OSError):
            raise GradlabError(f"cannot write {path} ({exc.strerror or exc}); choose a writable "
                               "path for the report") from None
        raise


def _plotlyjs_tag(mode: str, out: Path) -> str:
    if mode == "embed":
        return f"<script type='text/javascript' charset='utf-8'>{get_plotlyjs()}</script>"
    beside = out.parent / PLOTLYJS_FILE
    js = get_plotlyjs()
    try:
        current = beside.read_text(encoding="utf-8") if beside.is_file() else None
    except OSError:
        current = None
    if current != js:
        _write_atomic(beside, js)
    return f"<script src='{PLOTLYJS_FILE}' charset='utf-8'></script>"


def build_report(runs: Sequence[Any], out: str | os.PathLike[str], *, title: str | None = None,
                 plotlyjs: str = "embed", all_layers: bool = False) -> Path:
    """Write the HTML report of ``runs`` (:class:`gradlab.store.Run` objects) to ``out``.

    ``plotlyjs="embed"`` puts plotly.js inside the file (one self-contained file);
    ``"beside"`` writes ``plotly.min.js`` once next to it and references it relatively, for a
    folder of reports. The file is written to a temporary name and renamed, so an error leaves
    no partial report. The page opens with a headline and its figures (see
    :mod:`gradlab.report.headline`); ``all_layers`` draws every recorded layer in the depth
    profiles and heatmaps instead of the weight layers only. Returns the path written.
    """
    if plotlyjs not in PLOTLYJS_MODES:
        raise GradlabError(f"plotlyjs must be one of {', '.join(PLOTLYJS_MODES)}, got {plotlyjs!r}")
    runs = list(runs)
    if not runs:
        raise GradlabError("no runs to report on: pass at least one run directory")
    path = _check_out(out)
    views = prepare(runs)
    headline = make_headline(views, layer_filter(all_layers))
    sections = build_sections(views, all_layers=all_layers, skip=[s.key for s in headline.sections])
    for number, section in enumerate([*headline.sections, *sections], start=1):
        section.number = str(number)
    if title is None:
        names = [v.label for v in views]
        title = ("gradlab report: " + names[0]) if len(names) == 1 else "gradlab comparison: " + " vs ".join(names)
    html = page.render(title, views, sections, _plotlyjs_tag(plotlyjs, path), headline=headline)
    _write_atomic(path, html)
    return path


def report_from_dirs(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                     title: str | None = None, plotlyjs: str = "embed", all_layers: bool = False) -> Path:
    """Load run directories and write their report (what ``gradlab report`` calls)."""
    if not run_dirs:
        raise GradlabError("give at least one run directory, e.g. gradlab report runs/resnet56 -o r.html")
    _check_out(out, create=False)  # refuse a bad output before reading anything
    runs = [load_run(p) for p in run_dirs]
    return build_report(runs, out, title=title, plotlyjs=plotlyjs, all_layers=all_layers)
