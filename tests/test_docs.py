"""The documentation: the site builds with ``--strict``, the README stays a front page, and its
recorder example runs as written.

The site needs the ``docs`` extra (mkdocs, Material, mkdocstrings). Without mkdocs the build
test is skipped; with it, any warning (a broken link, a docstring mkdocstrings cannot read, a
page missing from the navigation) fails it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gradlab.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
FIRST_SCREEN_END = "<!-- end of the first screen -->"


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"), "-d", str(site)],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    # What the site promises: the API rendered from docstrings, every command's help from
    # click, and the README's picture copied in by the build hook.
    recorder = (site / "api" / "recorder.html").read_text()
    assert 'id="gradlab.recorder.GradientRecorder"' in recorder
    assert "record this optimizer step" in recorder.lower() or "GradientRecorder.step" in recorder
    cli = (site / "cli.html").read_text()
    for name in COMMANDS:
        assert f"Usage: gradlab {name} [OPTIONS]" in cli, name
    assert (site / "screenshots" / "compare-plain34-resnet34.png").stat().st_size > 0


def test_every_page_is_in_the_navigation():
    # mkdocs only reports a page left out of `nav` as INFO, which --strict lets through.
    config = (DOCS / "mkdocs.yml").read_text()
    pages = DOCS / "pages"
    missing = [p.relative_to(pages).as_posix() for p in sorted(pages.rglob("*.md"))
               if p.relative_to(pages).as_posix() not in config]
    assert not missing, f"pages missing from nav in docs/mkdocs.yml: {missing}"


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert text.count(FIRST_SCREEN_END) == 1
    # Every page of the site is linked from the README, so nothing moved out of it is lost.
    pages = sorted(p.name for p in (DOCS / "pages").glob("*.md") if p.name != "index.md")
    unlinked = [name for name in pages if f"](docs/pages/{name}" not in text]
    assert not unlinked, f"README does not link {unlinked}"
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README links a missing file: {target}"


def test_ci_runs_the_readme_test_command():
    # .ci/run must call exactly the test command the README gives to users.
    readme = README.read_text()
    block = re.search(r"Install and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert block, "the README's test command is missing"
    ci = (REPO / ".ci" / "run").read_text()
    assert block.group(1).strip() in ci


def test_readme_recorder_example_runs(tmp_path, monkeypatch):
    # The ten lines under "The recorder in your own loop", run as written on a small model; the
    # run directory they write must hold the recorded steps (every=10 over 12 steps: 0 and 10).
    from gradlab.store import load_run

    code = re.search(r"## The recorder in your own loop\n\n```python\n(.+?)```", README.read_text(), re.S)
    assert code, "the README's recorder example is missing"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    loader = [(torch.randn(4, 6), torch.randint(0, 3, (4,))) for _ in range(12)]
    names = {"model": model, "loader": loader, "loss_fn": nn.CrossEntropyLoss(),
             "opt": torch.optim.SGD(model.parameters(), lr=0.1)}
    monkeypatch.chdir(tmp_path)
    exec(code.group(1), names)
    assert (tmp_path / "report.html").stat().st_size > 0
    run = load_run(tmp_path / "report-run")
    assert sorted(run.layers.step.unique()) == [0, 10]
    assert set(run.layers.layer.unique()) == {name for name, _ in model.named_children()}


RECORDER_PAGE = DOCS / "pages" / "recorder.md"


def _recorder_page_example(heading: str) -> str:
    """The first Python block under ``### heading`` of the recorder page, as written there."""
    code = re.search(rf"### {re.escape(heading)}\n.*?```python\n(.+?)```", RECORDER_PAGE.read_text(), re.S)
    assert code, f"the recorder page has no example under '### {heading}'"
    return code.group(1)


@pytest.mark.slow  # 100 steps with every metric and a report: about 8 s on a shared 2-core CPU

def test_recorder_page_loop_example_runs(tmp_path, monkeypatch):
    # "In your loop", run as written: 100 steps recorded every 5th, a run directory beside the
    # page, and the diagnosis the page promises (vanishing, use ReLU) for the sigmoid MLP.
    from gradlab.analysis.diagnose import diagnose_run
    from gradlab.store import load_run

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    names: dict = {}
    exec(_recorder_page_example("In your loop"), names)
    assert (tmp_path / "sigmoid-mlp.html").stat().st_size > 0
    run = load_run(tmp_path / "sigmoid-mlp-run")
    assert sorted(run.layers.step.unique()) == list(range(0, 100, 5))
    assert set(run.layers.layer.unique()) == {name for name, _ in names["model"].named_children()}
    assert "act_grad_cos_class" in set(run.layers.metric.unique())
    verdicts = diagnose_run(run)
    init = verdicts[(verdicts.metric == "grad_norm") & (verdicts.phase == "init")].iloc[0]
    assert init.verdict == "vanishing"
    assert "ReLU" in init.suggestion


@pytest.mark.slow
def test_recorder_page_lightning_example_runs(tmp_path, monkeypatch):
    # 512 examples at batch 32 for 2 epochs: 32 optimizer steps, recorded every 2nd.
    pytest.importorskip("lightning")
    from gradlab.store import load_run

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(_recorder_page_example("In Lightning"), {"__name__": "lightning_example"})
    assert (tmp_path / "lightning-mlp.html").stat().st_size > 0
    run = load_run(tmp_path / "runs" / "lightning-mlp")
    assert sorted(run.layers.step.unique()) == list(range(0, 32, 2))
    assert {"net.0", "net.1", "net.2"} <= set(run.layers.layer.unique())


@pytest.mark.slow
def test_recorder_page_hf_trainer_example_runs(tmp_path, monkeypatch):
    # 40 optimizer steps of two accumulated micro-batches, recorded every 5th.
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradlab.store import load_run

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    exec(_recorder_page_example("In the Hugging Face Trainer"), {"__name__": "hf_example"})
    assert (tmp_path / "gpt2-small.html").stat().st_size > 0
    run = load_run(tmp_path / "runs" / "gpt2-small")
    assert sorted(run.layers.step.unique()) == list(range(0, 40, 5))
    assert any(name.startswith("transformer.h.3.") for name in run.layers.layer.unique())
