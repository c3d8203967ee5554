"""HTML reports: content, escaping, underflow and downsampling, plotly.js modes, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gradlab.bench.report import synthetic_run
from gradlab.errors import GradlabError
from gradlab.report import build_report, build_sections
from gradlab.report.align import align
from gradlab.report.data import prepare
from gradlab.report.downsample import log_codes, minmax_grid, minmax_indices
from gradlab.store import Run

ALL_FIGURES = ["headline-profile", "training", "profiles", "flow-grad", "flow-act", "gradnorm",
               "activations", "updates", "nonfinite"]
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs():
    """Two small runs with every metric; the first has clipping and a non-finite step."""
    a = synthetic_run(steps=60, blocks=(2, 2), name="plain-ish", decay=0.3, nonfinite_at=50, clip=0.05)
    b = synthetic_run(steps=40, blocks=(2, 2), name="res-ish", seed=1, clip=None)
    b.meta["spec"]["lr"] = 0.05
    for run in (a, b):
        run.meta["spec"]["optim"] = {"name": "sgd", "momentum": 0.9}  # equal, nested
    return [a, b]


def plot_ids(html: str) -> list[str]:
    return re.findall(r'<div id="fig-([a-z-]+)" class="plotly-graph-div"', html)


# -- the page -----------------------------------------------------------------------------
def test_one_run_builds_with_every_figure(tmp_path, runs):
    out = build_report(runs[:1], tmp_path / "one.html")
    html = out.read_text()
    assert plot_ids(html) == ALL_FIGURES
    assert "gradlab report: plain-ish" in html
    assert "first non-finite value at step 50 in layer conv1" in html


def test_two_runs_share_colours_and_list_differing_settings(tmp_path, runs):
    out = build_report(runs, tmp_path / "two.html", title="two runs")
    html = out.read_text()
    assert set(ALL_FIGURES) <= set(plot_ids(html))
    settings = html[html.index("<section id='settings'>"):html.index("<section id='diagnosis'>")]
    differing = settings[:settings.index("<details>")]
    for key in ("lr", "clip", "model", "seed", "steps"):
        assert f"<th>{key}</th>" in differing
    assert "5 of 7 settings differ" in differing
    assert "optim.momentum" not in differing and "<th>optim.momentum</th>" in settings
    # one colour per run, the same in every figure
    views = prepare(runs)
    colours: dict[str, set[str]] = {}
    for section in build_sections(views):
        if section.figure is None:
            continue
        for trace in section.figure.data:
            if trace.type == "scatter" and trace.legendgroup:
                colours.setdefault(trace.legendgroup, set()).add(trace.line.color or trace.marker.color)
    assert colours == {"plain-ish": {views[0].colour}, "res-ish": {views[1].colour}}
    assert views[0].colour != views[1].colour


def test_names_and_settings_are_escaped(tmp_path, runs):
    evil = synthetic_run(steps=5, blocks=(1,), name=EVIL)
    evil.meta["spec"]["note"] = "<img src=x onerror=alert(2)>"
    html = build_report([evil, runs[1]], tmp_path / "evil.html").read_text()
    assert EVIL not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # inside plotly's JSON the name is entity-escaped too, so plotly.js draws it as text
    payload = "".join(re.findall(r"Plotly\.newPlot\((.*?)\)\s*};", html, flags=re.S))
    assert "&lt;script&gt;alert(1)&lt;" in payload.replace("\\u002f", "/")
    assert "<script>alert" not in payload.replace("\\u003c", "<").replace("\\u002f", "/").replace("&lt;", "")


def test_single_step_run_and_missing_data_say_so(tmp_path):
    rows = [(0, f"layers.{d}", d, "act_grad_norm", 10.0 ** (d - 6)) for d in range(6)]
    run = Run(path=Path("p"), meta={"name": "probe"},
              layers=pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"]),
              steps=pd.DataFrame(columns=["step", "metric", "value"]))
    html = build_report([run], tmp_path / "probe.html").read_text()
    assert plot_ids(html) == ["headline-profile", "profiles", "flow-act"]
    assert "No run recorded grad_norm" in html and "No run recorded loss or accuracy" in html
    assert "No run recorded a total or per-layer gradient norm" in html
    assert "No non-finite value was recorded in the run" in html
    assert "vanishing" in html  # 1 decade per layer at init


def test_run_without_any_records_still_builds(tmp_path):
    run = Run(path=Path("e"), meta={"name": "empty"}, layers=pd.DataFrame(), steps=pd.DataFrame())
    html = build_report([run], tmp_path / "empty.html").read_text()
    assert plot_ids(html) == [] and "Nothing to diagnose" in html


def test_underflow_gets_its_own_band_in_the_heatmap():
    rows = [(s, f"l{d}", d, "grad_norm", 0.0 if d < 2 else 10.0 ** (d - 5)) for s in range(3) for d in range(6)]
    run = Run(path=Path("u"), meta={"name": "u"},
              layers=pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"]),
              steps=pd.DataFrame(columns=["step", "metric", "value"]))
    section = next(s for s in build_sections(prepare([run])) if s.key == "flow-grad")
    trace = section.figure.data[0]
    axis = section.figure.layout.coloraxis
    z = np.asarray(trace.z)
    assert np.all(z[:2] == np.float32(axis.cmin))  # the zeros sit on the floor
    np.testing.assert_allclose(z[2:], np.log10(10.0 ** (np.arange(2, 6) - 5))[:, None] * np.ones((1, 3)), rtol=1e-6)
    assert axis.colorbar.ticktext[0] == "underflow (0.0)"
    assert np.all(np.asarray(trace.customdata)[:2] == 0.0)  # hover shows the true value


def test_profile_marks_underflow_on_a_floor():
    rows = [(0, f"l{d}", d, "grad_norm", 0.0 if d == 0 else 10.0 ** -d) for d in range(5)]
    run = Run(path=Path("u"), meta={"name": "u"},
              layers=pd.DataFrame(rows, columns=["step", "layer", "depth", "metric", "value"]),
              steps=pd.DataFrame(columns=["step", "metric", "value"]))
    fig = next(s for s in build_sections(prepare([run])) if s.key == "profiles").figure
    floor_traces = [t for t in fig.data if t.mode == "markers"]
    assert len(floor_traces) == 1 and len(floor_traces[0].y) == 1
    assert floor_traces[0].y[0] < 1e-4  # below the smallest positive value
    label = next(a for a in fig.layout.annotations if "underflow" in (a.text or ""))
    # on a log axis plotly reads an annotation's y as log10: the label must sit on the floor
    # line (drawn at the floor value itself), not at 10**floor
    line = next(sh for sh in fig.layout.shapes if sh.line.dash == "dot")
    assert label.y == pytest.approx(np.log10(line.y0)) and line.y0 == floor_traces[0].y[0]


# -- downsampling -------------------------------------------------------------------------
def test_minmax_indices_keep_every_spike_and_dip():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.01, 10_000)
    spikes = [17, 4_321, 9_998]
    values[spikes] = 50.0
    values[777] = -40.0
    values[5_000] = np.nan
    keep = minmax_indices(values, 500)
    assert len(keep) <= 502
    assert set(spikes) <= set(keep) and 777 in keep and 5_000 not in keep
    assert list(keep) == sorted(keep)
    assert list(minmax_indices(values[:100], 500)) == list(range(100))


def test_minmax_grid_keeps_extremes_and_bounds_size():
    rng = np.random.default_rng(0)
    values = 10.0 ** rng.normal(-3, 0.1, (300, 5_000))
    values[10, 20] = 0.0  # underflow
    values[250, 4_000] = np.nan  # non-finite
    values[100, 2_500] = 1e3
    present = np.ones(values.shape, dtype=bool)
    present[:, 3_000:3_100] = False  # not recorded there
    z = log_codes(values, present)
    grid = minmax_grid(z, max_rows=200, max_cols=400)
    assert grid.paired and grid.z.shape[0] <= 200 and grid.z.shape[1] <= 400
    assert np.isneginf(grid.z).sum() == 1 and np.isposinf(grid.z).sum() == 1
    assert np.nanmax(grid.z[np.isfinite(grid.z)]) == pytest.approx(3.0)
    small = minmax_grid(z[:5, :7], 200, 400)
    assert not small.paired and np.array_equal(small.z, z[:5, :7], equal_nan=True)


def test_alignment_lines_up_twins_by_stage_and_block():
    plain = ["conv1", "bn1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "fc"]
    res = plain[:4] + ["layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0", "fc"]
    a, b = align(plain, range(len(plain))), align(res, range(len(res)))
    assert a.segments == b.segments and [s[0] for s in a.segments] == ["stem", "stage 1", "stage 2", "head"]
    for name in ("conv1", "layer1.0.conv1", "fc"):
        assert a.positions[name] == b.positions[name]
    assert 0.5 <= a.positions["layer2.0.conv1"] < 0.75  # stage 2 of 4 segments
    mlp = align(["layers.0", "layers.1", "layers.2"], [0, 1, 2])
    assert mlp.positions == {"layers.0": 0.0, "layers.1": 0.5, "layers.2": 1.0} and not mlp.staged


# -- plotly.js and writing ----------------------------------------------------------------
def test_plotlyjs_embedded_once_or_written_beside(tmp_path, runs):
    from plotly.offline import get_plotlyjs

    banner = get_plotlyjs()[:200]
    embedded = build_report(runs[:1], tmp_path / "a" / "e.html").read_text()
    assert embedded.count(banner) == 1
    beside_path = build_report(runs[:1], tmp_path / "b" / "r1.html", plotlyjs="beside")
    build_report(runs[1:], tmp_path / "b" / "r2.html", plotlyjs="beside")
    text = beside_path.read_text()
    assert banner not in text and "<script src='plotly.min.js'" in text
    assert (tmp_path / "b" / "plotly.min.js").read_text() == get_plotlyjs()
    assert len(text) < len(embedded) - len(get_plotlyjs()) // 2
    with pytest.raises(GradlabError, match="plotlyjs must be one of"):
        build_report(runs[:1], tmp_path / "x.html", plotlyjs="cdn")


def test_failure_leaves_no_partial_file(tmp_path, runs, monkeypatch):
    import gradlab.report.page as page

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(page, "render", boom)
    with pytest.raises(RuntimeError):
        build_report(runs[:1], tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GradlabError, match="no runs"):
        build_report([], tmp_path / "r.html")
    (tmp_path / "d").mkdir()
    with pytest.raises(GradlabError, match="is a directory"):
        build_report(runs[:1], tmp_path / "d")


def test_report_modules_never_import_torch():
    code = (
        "import sys, importlib, pkgutil, tempfile, os\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import gradlab.analysis.diagnose, gradlab.report\n"
        "for m in pkgutil.iter_modules(gradlab.report.__path__):\n"
        "    importlib.import_module('gradlab.report.' + m.name)\n"
        "from gradlab.bench.report import synthetic_run\n"
        "from gradlab.report import build_report\n"
        "build_report([synthetic_run(steps=5, blocks=(1,))], os.path.join(tempfile.mkdtemp(), 'r.html'))\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules), 'torch imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# -- the command line ---------------------------------------------------------------------
def _dict_array(values) -> pa.DictionaryArray:
    cat = pd.Categorical(values)
    return pa.DictionaryArray.from_arrays(pa.array(cat.codes.astype(np.int32)),
                                          pa.array(list(cat.categories.astype(str))))


def write_run_dir(root: Path, run: Run) -> Path:
    """A run directory in the store's layout: meta.json and one part per table."""
    path = root / run.name
    (path / "layers").mkdir(parents=True)
    (path / "steps").mkdir()
    meta = dict(run.meta, status="finished")
    (path / "meta.json").write_text(json.dumps(meta))
    lay = run.layers
    pq.write_table(pa.table({
        "step": pa.array(lay["step"].to_numpy(np.int64)), "layer": _dict_array(lay["layer"].astype(str)),
        "depth": pa.array(lay["depth"].to_numpy(np.int32)), "metric": _dict_array(lay["metric"].astype(str)),
        "value": pa.array(lay["value"].to_numpy(np.float64)),
    }), path / "layers" / "part-00000.parquet")
    st = run.steps
    pq.write_table(pa.table({
        "step": pa.array(st["step"].to_numpy(np.int64)), "metric": _dict_array(st["metric"].astype(str)),
        "value": pa.array(st["value"].to_numpy(np.float64)),
    }), path / "steps" / "part-00000.parquet")
    return path


def test_cli_report_on_run_directories(tmp_path, runs):
    from gradlab.cli import main

    dirs = [str(write_run_dir(tmp_path, r)) for r in runs]
    out = tmp_path / "out" / "cmp.html"
    result = CliRunner().invoke(main, ["report", *dirs, "-o", str(out), "--title", "cli test"])
    assert result.exit_code == 0, result.output
    assert f"report: {out}" in result.output
    html = out.read_text()
    assert "<title>cli test</title>" in html and set(ALL_FIGURES) <= set(plot_ids(html))
    help_text = CliRunner().invoke(main, ["report", "--help"]).output
    assert "Examples:" in help_text and "gradlab report" in help_text and "--plotlyjs" in help_text


@pytest.mark.parametrize("case", ["missing", "not-a-run", "unwritable", "out-is-dir"])
def test_cli_report_bad_inputs(tmp_path, runs, case):
    from gradlab.cli import main

    good = str(write_run_dir(tmp_path / "runs", runs[1]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "new" / "r.html"  # a directory to be created only when the report is written
    args = {
        "missing": [str(tmp_path / "nope"), "-o", str(out)],
        "not-a-run": [str(out_dir), "-o", str(out)],
        "unwritable": [good, "-o", str(tmp_path / "runs" / runs[1].name / "meta.json" / "r.html")],
        "out-is-dir": [good, "-o", str(out_dir)],
    }[case]
    result = CliRunner().invoke(main, ["report", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert not list(out_dir.glob("*")) and not list(tmp_path.rglob("*.html")) and not list(tmp_path.rglob("*.tmp"))
