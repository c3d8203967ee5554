"""The top of a report: weight-layer profiles, the comparison headline, experiment summaries."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.bench.report import synthetic_run
from gradlab.errors import GradlabError
from gradlab.report import build_report
from gradlab.report.data import prepare
from gradlab.report.headline import make_headline
from gradlab.report.layerpick import layer_filter
from gradlab.store import Run, load_run

REPO = Path(__file__).resolve().parents[1]


def _conv_bn_run() -> Run:
    """conv -> bn pairs whose norms differ 10x: a profile over every layer zig-zags."""
    table, rows = [], []
    for i in range(4):
        for kind, scale in (("Conv2d", 1.0), ("BatchNorm2d", 10.0)):
            name = f"layers.{i}.{'conv' if kind == 'Conv2d' else 'bn'}"
            table.append({"name": name, "depth": len(table), "type": kind})
            for step in (0, 1):
                rows.append((step, name, table[-1]["depth"], "act_grad_norm", scale * 10.0 ** (i - 4)))
    return Run(path=Path("zz"), meta={"name": "zz", "layers": table},
               layers=pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"]),
               steps=pd.DataFrame(columns=["step", "metric", "value"]))


@pytest.mark.parametrize("all_layers", [False, True])
def test_profiles_show_weight_layers_unless_asked_for_all(all_layers):
    run = _conv_bn_run()
    headline = make_headline(prepare([run]), layer_filter(all_layers))
    fig = next(s for s in headline.sections if s.key == "headline-profile").figure
    init = fig.data[0]
    convs = [e["name"] for e in run.meta["layers"] if e["type"] == "Conv2d"]
    expected = len(run.meta["layers"]) if all_layers else len(convs)
    assert len(init.y) == expected
    if not all_layers:  # the conv norms alone: a straight decade per layer, no zig-zag
        np.testing.assert_allclose(np.diff(np.log10(np.asarray(init.y, dtype=float))), 1.0)


def test_comparison_headline_names_the_better_run_with_its_numbers(tmp_path):
    a = synthetic_run(steps=40, blocks=(1, 1), name="weaker", decay=0.3, seed=0, clip=None)
    b = synthetic_run(steps=40, blocks=(1, 1), name="stronger", seed=1, clip=None)
    accs = {}
    for run, acc in ((a, 0.2), (b, 0.7)):  # set the last held-out accuracy by hand
        steps = run.steps
        last = steps.index[steps["metric"] == "eval_acc"][-1]
        steps.loc[last, "value"] = acc
        accs[run.name] = acc
    html = build_report([a, b], tmp_path / "cmp.html").read_text()
    headline = re.search(r"<p class='headline'>(.*?)</p>", html).group(1)
    assert headline.startswith("stronger trains better than weaker: held-out accuracy 0.70 vs 0.20")
    assert "dL/dh" in headline  # the gradient-flow difference follows
    # the headline and its first figure come before the first table
    assert html.index("class='headline'") < html.index('id="fig-headline-profile"') < html.index("<table")


def _meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def test_clipping_summary_counts_survivors_from_the_stored_runs():
    dirs = sorted((REPO / "reports" / "runs" / "clipping").iterdir())
    metas = [_meta(d) for d in dirs]
    top = max(m["spec"]["lr"] for m in metas)
    clipped = [m for m in metas if m["spec"]["lr"] == top and m["spec"]["clip"] != "none"]
    survived = sum(m["status"] == "finished" for m in clipped)
    headline = make_headline(prepare([load_run(d) for d in dirs]), layer_filter(False))
    assert headline.kind == "experiment"
    assert f"{survived} of {len(clipped)} clipping settings survive all 300 steps" in headline.text
    bare = next(m for m in metas if m["spec"]["lr"] == top and m["spec"]["clip"] == "none")
    assert f"stops with a non-finite value at step {bare['nonfinite_first']['step']}" in headline.text


def test_image_command_names_the_extra_when_selenium_is_missing(monkeypatch, tmp_path):
    from gradlab.report.images import report_images

    page = tmp_path / "r.html"
    page.write_text("<html></html>")
    monkeypatch.setitem(sys.modules, "selenium", None)  # import selenium now fails
    with pytest.raises(GradlabError, match=r"pip install 'gradlab\[images\]'"):
        report_images([page], tmp_path / "images")


def _pvr_run(model: str, loss: float, seed: int):
    """A plain_vs_residual grid point whose training loss is ``loss`` throughout."""
    run = synthetic_run(steps=20, blocks=(1, 1), name=model, seed=seed, clip=None)
    run.meta["model"] = model
    run.meta["spec"] = {"model": model, "seed": 0, "extra": {"experiment": "plain_vs_residual"}}
    steps = run.steps
    steps.loc[steps["metric"] == "loss", "value"] = loss
    return run


@pytest.mark.parametrize("losses, words", [
    ((0.30, 0.90, 0.08, 0.05), "degradation, as in He et al.'s Fig. 6 (plain56 0.900 vs plain20 0.300; "
                               "resnet56 0.050 vs resnet20 0.080)"),
    ((0.30, 0.90, 0.08, 0.10), "half shows at this budget"),
    ((0.90, 0.30, 0.08, 0.10), "does not show at this budget"),
])
def test_plain_vs_residual_headline_says_whether_degradation_shows(losses, words):
    models = ("plain20", "plain56", "resnet20", "resnet56")
    runs = [_pvr_run(m, loss, i) for i, (m, loss) in enumerate(zip(models, losses, strict=True))]
    headline = make_headline(prepare(runs), layer_filter(False))
    assert headline.kind == "experiment"
    assert words in headline.text
    assert [s.key for s in headline.sections] == ["summary", "summary-degradation"]
