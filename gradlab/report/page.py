"""The HTML page: header, runs and differing settings, diagnosis panel, numbered figures.

Every run name, label and setting is escaped here (HTML) or in the figures (plotly text), so
a run named ``<script>alert(1)</script>`` shows as text. plotly.js is included once: inline,
or as a ``<script src>`` to a file beside the page.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.io as pio

from gradlab._version import __version__
from gradlab.analysis.diagnose import THRESHOLDS, VERDICTS, thresholds_dict
from gradlab.common import metrics as M
from gradlab.report.data import RunView
from gradlab.report.style import Section, fmt_num, htext

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1400px;margin:0 auto;padding:16px 28px 60px}
h1{font-size:1.6em;margin:.4em 0 .1em}
h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin:0 0 1em} .intro{color:#444;max-width:70em;margin:.3em 0}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0;background:#fff}
th,td{border:1px solid #e2e2e2;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:2px;margin-right:.35em;vertical-align:-.1em}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff;white-space:nowrap}
.v-healthy{background:#2e7d32}.v-vanishing{background:#1565c0}.v-exploding{background:#c62828}
.v-non-finite{background:#ad1457}.v-no-data{background:#9e9e9e}
.why{color:#666;font-size:.92em} .notes{color:#555;font-size:.9em;margin:.2em 0 .4em 1.2em;padding:0}
.nodata{color:#777;font-style:italic} .plot{background:#fff;border:1px solid #e6e6e6;margin:.4em 0}
.summary li{margin:.2em 0} details{margin:.4em 0} summary{cursor:pointer;color:#444}
.headline{font-size:1.15em;line-height:1.45;max-width:60em;margin:.6em 0;padding:.6em .9em;background:#fff;
  border-left:4px solid #1565c0}
.lines{color:#444;font-size:.92em;margin:.2em 0 .6em 1.2em;padding:0}
"""

_SIGNAL = {M.GRAD_NORM: f"weight gradients ({M.GRAD_NORM})", M.ACT_GRAD_NORM: f"dL/dh ({M.ACT_GRAD_NORM})"}


def flatten(settings: Any, prefix: str = "") -> dict[str, str]:
    """Nested settings as ``dotted.key -> text``."""
    out: dict[str, str] = {}
    if isinstance(settings, dict):
        for key, value in settings.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = _setting_text(value)
    elif prefix:
        out[prefix] = _setting_text(settings)
    return out


def _setting_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def _run_settings(view: RunView) -> dict[str, str]:
    spec = view.meta.get("spec")
    if isinstance(spec, dict) and spec:
        return flatten(spec)
    keys = ("model", "seed", "device", "num_steps")
    return {k: _setting_text(view.meta[k]) for k in keys if k in view.meta}


def _swatch(view: RunView) -> str:
    return f"<span class='swatch' style='background:{view.colour}'></span>{htext(view.label)}"


def _runs_table(views: Sequence[RunView]) -> str:
    head = ["run", "model", "status", "steps", "parameters", "device", "wall time", "started", "directory"]
    rows = []
    for v in views:
        meta = v.meta
        steps = ""
        for m in v.matrices.values():
            steps = f"{len(m.steps)} recorded (last {int(m.steps[-1])})" if len(m.steps) else steps
            break
        wall = meta.get("wall_time_s")
        status = getattr(v.run, "status", meta.get("status", ""))
        cells = [_swatch(v), htext(meta.get("model", "")), htext(status), htext(steps),
                 htext(f"{meta['num_params']:,}" if isinstance(meta.get("num_params"), int) else ""),
                 htext(meta.get("device", "")),
                 htext(f"{wall:.1f} s" if isinstance(wall, (int, float)) else ""),
                 htext(meta.get("started_at", "")), htext(getattr(v.run, "path", ""))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _settings_tables(views: Sequence[RunView]) -> str:
    settings = [_run_settings(v) for v in views]
    keys = sorted(set().union(*settings)) if settings else []
    header = "<tr><th>setting</th>" + "".join(f"<th>{_swatch(v)}</th>" for v in views) + "</tr>"

    def table(rows: list[str]) -> str:
        return "<table>" + header + "".join(rows) + "</table>"

    def row(key: str) -> str:
        cells = "".join(f"<td>{htext(s.get(key, '(not set)'))}</td>" for s in settings)
        return f"<tr><th>{htext(key)}</th>{cells}</tr>"

    parts = []
    if len(views) > 1:
        differ = [k for k in keys if len({s.get(k, "\0missing") for s in settings}) > 1]
        if differ:
            differing = table([row(k) for k in differ])
            if len(views) > OPEN_RUNS or len(differ) > 12:
                parts.append(f"<details><summary>{len(differ)} of {len(keys)} settings differ between "
                             f"the runs</summary>{differing}</details>")
            else:
                parts.append(f"<p>{len(differ)} of {len(keys)} settings differ between the runs:</p>")
                parts.append(differing)
        else:
            parts.append(f"<p>All {len(keys)} recorded settings are the same in every run.</p>")
    if keys:
        parts.append(f"<details><summary>all {len(keys)} settings</summary>{table([row(k) for k in keys])}</details>")
    else:
        parts.append("<p class='nodata'>No settings were recorded with the run.</p>")
    return "\n".join(parts)


def _diagnosis_panel(views: Sequence[RunView], open_summary: bool = True) -> str:
    frames = [v.diagnosis for v in views if len(v.diagnosis)]
    by_label = {v.label: v for v in views}
    if not frames:
        return "<p class='nodata'>Nothing to diagnose: no run recorded grad_norm or act_grad_norm.</p>"
    df = pd.concat(frames, ignore_index=True)
    summary = [_worst_verdict(v) for v in views]
    head = ["run", "signal", "phase", "steps", "verdict", "first/last", "decades lost per layer",
            "zeros (underflow)", "non-finite", "saturated", "dead", "clipping", "evidence"]
    rows = [_verdict_row(r, by_label) for r in df.itertuples(index=False)]
    t = thresholds_dict(THRESHOLDS)
    thresholds = ", ".join(f"{htext(k)} = {htext(v)}" for k, v in t.items())
    summary_html = "<ul class='summary'>" + "".join(summary) + "</ul>"
    table = "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
    return (
        (summary_html if open_summary else
         f"<details><summary>the worst verdict of each of the {len(views)} runs</summary>{summary_html}</details>")
        + f"<details><summary>every verdict: {len(rows)} rows (run, signal, phase)</summary>{table}</details>"
        + "<details><summary>how the verdicts are made</summary><p class='intro'>first = layer nearest "
        "the input, last = nearest the output; first/last = norm(first)/norm(last). Decades lost per "
        "layer: slope of log10(norm) against the layer position counted in weight layers (positive = "
        "the norm shrinks toward the input). Phases: init = first recorded step, early = the next "
        "tenth of the recorded steps, late = the last tenth (medians per layer). Zeros are underflow "
        "(below float32) and count as vanishing on the input side. Thresholds: "
        f"{thresholds}.</p></details>"
    )


def _worst_verdict(v: RunView) -> str:
    """A run's summary item: its worst verdict (dL/dh first on ties) and the advice of every
    verdict that is not healthy."""
    d = v.diagnosis
    if not len(d):
        return f"<li>{_swatch(v)}: no gradient norms recorded.</li>"
    rank = {verdict: i for i, verdict in enumerate(VERDICTS)}
    order = sorted(range(len(d)), key=lambda i: (rank.get(d["verdict"].iat[i], 9),
                                                 d["metric"].iat[i] != M.ACT_GRAD_NORM))
    worst = d.iloc[order[0]]
    advice: dict[str, str] = {}
    for i in order:
        if d["verdict"].iat[i] not in ("healthy", "no-data") and d["suggestion"].iat[i]:
            advice.setdefault(str(d["suggestion"].iat[i]), str(d["reason"].iat[i]))
    items = "".join(f"<li><b>{htext(sug)}</b><div class='why'>because {htext(why)}</div></li>"
                    for sug, why in advice.items())
    return (
        f"<li>{_swatch(v)}: <span class='verdict v-{htext(worst['verdict'])}'>"
        f"{htext(worst['verdict'])}</span> ({htext(_SIGNAL.get(worst['metric'], worst['metric']))}, "
        f"{htext(worst['phase'])}): {htext(worst['evidence'])}"
        + (f"<ul>{items}</ul>" if items else "") + "</li>")


def _verdict_row(r: Any, by_label: dict[str, RunView]) -> str:
    """One row of the table of every verdict (``r``: a row of the diagnosis table)."""
    steps = f"{r.step_from}" if r.step_from == r.step_to else f"{r.step_from}-{r.step_to}"
    clip = ""
    if isinstance(r.clip_rate, float) and math.isfinite(r.clip_rate):
        clip = f"fired {int(r.clip_fired)} ({r.clip_rate:.0%})"
        if r.clip_top_layers:
            clip += f"; norm held by {r.clip_top_layers}"
    run = _swatch(by_label[r.run]) if r.run in by_label else htext(r.run)
    cells = [
        f"<td>{run}</td>", f"<td>{htext(_SIGNAL.get(r.metric, r.metric))}</td>",
        f"<td>{htext(r.phase)}</td>", f"<td class='num'>{htext(steps)}</td>",
        f"<td><span class='verdict v-{htext(r.verdict)}'>{htext(r.verdict)}</span></td>",
        f"<td class='num'>{htext(fmt_num(r.first_to_last_ratio, 2))}</td>",
        f"<td class='num'>{htext(fmt_num(r.decades_per_layer, 3))}</td>",
        f"<td class='num'>{r.n_zero} of {r.n_layers}</td>",
        f"<td class='num'>{r.n_nonfinite + r.nonfinite_steps}</td>",
        f"<td class='num'>{htext(_frac(r.saturated_frac))}</td>",
        f"<td class='num'>{htext(_frac(r.dead_frac))}</td>",
        f"<td>{htext(clip)}</td>", f"<td class='why'>{htext(r.evidence)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _frac(x: Any) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else f"{x:.0%}"


def _figure_html(section: Section) -> str:
    assert section.figure is not None
    return pio.to_html(
        section.figure, full_html=False, include_plotlyjs=False, div_id=f"fig-{section.key}",
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"filename": section.key}},
        default_width="100%",
    )


#: Above this many runs, the runs table and the per-run diagnosis list start collapsed.
OPEN_RUNS = 4


def _section_html(s: Section, fallback_number: int) -> str:
    body = [f"<section id='sec-{htext(s.key)}'><h2>{htext(s.number or fallback_number)}. {htext(s.title)}</h2>",
            f"<p class='intro'>{htext(s.intro)}</p>"]
    if s.figure is None:
        text = " ".join(s.notes) if s.notes else "No data for this figure."
        body.append(f"<p class='nodata'>{htext(text)}</p>")
    else:
        if s.notes:
            body.append("<ul class='notes'>" + "".join(f"<li>{htext(n)}</li>" for n in s.notes) + "</ul>")
        body.append(f"<div class='plot'>{_figure_html(s)}</div>")
    body.append("</section>")
    return "\n".join(body)


def _collapsed(summary: str, inner: str, open_: bool) -> str:
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{inner}</details>"


def _headline_html(headline: Any) -> str:
    lines = "".join(f"<li>{htext(line)}</li>" for line in headline.lines)
    return (f"<section id='headline'><p class='headline'>{htext(headline.text)}</p>"
            + (f"<ul class='lines'>{lines}</ul>" if lines else "") + "</section>")


def render(title: str, views: Sequence[RunView], sections: Sequence[Section], plotlyjs_tag: str,
           headline: Any = None) -> str:
    """The whole page as one string: headline and its figures first, tables, then the details."""
    written = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    names = ", ".join(v.label for v in views)
    many = len(views) > OPEN_RUNS
    body = [
        f"<h1>{htext(title)}</h1>",
        f"<p class='sub'>{len(views)} run{'s' if len(views) != 1 else ''}: {htext(names)} &middot; "
        f"gradlab {htext(__version__)} &middot; written {htext(written)}</p>",
    ]
    lead = list(headline.sections) if headline is not None else []
    if headline is not None:
        body.append(_headline_html(headline))
    body += [_section_html(s, i) for i, s in enumerate(lead, start=1)]
    body += [
        "<section id='runs'><h2>Runs</h2>",
        _collapsed(f"{len(views)} runs: status, steps, wall time, directory", _runs_table(views), not many),
        "</section>",
        "<section id='settings'><h2>Settings</h2>", _settings_tables(views), "</section>",
        "<section id='diagnosis'><h2>Diagnosis</h2>", _diagnosis_panel(views, open_summary=not many), "</section>",
    ]
    body += [_section_html(s, i) for i, s in enumerate(sections, start=len(lead) + 1)]
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{htext(title)}</title>\n<style>{_CSS}</style>\n{plotlyjs_tag}\n</head>\n"
        "<body><main>\n" + "\n".join(body) + "\n</main></body>\n</html>\n"
    )
