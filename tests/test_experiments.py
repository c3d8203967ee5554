"""The experiment files in experiments/ stay runnable: each parses for both profiles, and the
first grid point of each trains for two steps and yields a finished run and a report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gradlab.training.experiment import load_experiment, run_experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
NAMES = ("plain_vs_residual", "sigmoid_vs_relu", "batchnorm", "clipping", "initialisation")
FILES = [EXPERIMENTS / f"{name}.toml" for name in NAMES]

# Tiny settings so that a grid point costs a second or two on a CPU.
SMOKE = {"steps": 2, "eval_every": 1, "train_size": 128, "eval_size": 64, "batch_size": 32}


def test_the_five_files_exist() -> None:
    assert sorted(p.name for p in EXPERIMENTS.glob("*.toml")) == sorted(p.name for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_file_has_cpu_and_full_profiles(path: Path) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    assert doc["name"] == path.stem
    assert doc["description"].strip()
    assert {"cpu", "full"} <= set(doc["profiles"])


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_full_profile_is_the_papers_recipe(path: Path) -> None:
    experiment = load_experiment(path, "full")
    assert experiment.profile == "full"
    for config in experiment.configs:
        # He et al. 2015, sec. 4.2: CIFAR-10, batch 128, 64k steps, steps at 32k and 48k,
        # momentum 0.9, weight decay 1e-4, pad-crop-flip augmentation.
        assert config.data == "cifar10" and config.augment
        assert (config.batch_size, config.steps, config.schedule) == (128, 64000, "step:32000,48000")
        assert (config.momentum, config.weight_decay, config.optimizer) == (0.9, 1e-4, "sgd")
        assert config.extra["profile"] == "full"


@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_cpu_profile_uses_synthetic_data(path: Path) -> None:
    experiment = load_experiment(path, "cpu")
    assert experiment.configs, "the cpu profile defines no runs"
    for config in experiment.configs:
        assert config.data == "synthetic"
        assert config.record_every > 1  # the CPU budget records a subset of the steps


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=NAMES)
def test_first_grid_point_runs(path: Path, tmp_path: Path) -> None:
    first = load_experiment(path, "cpu").configs[0]
    report, run_dirs = run_experiment(
        path, limit=1, overrides=SMOKE, out=tmp_path / "runs", report=tmp_path / "report.html",
        quiet=True,
    )
    assert len(run_dirs) == 1
    meta = json.loads((run_dirs[0] / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished", meta.get("error")
    assert meta["spec"]["model"] == first.model  # (meta["model"] is the normalised spec)
    assert meta["spec"]["steps"] == 2
    assert any((run_dirs[0] / "layers").glob("part-*.parquet"))
    assert report == tmp_path / "report.html"
    assert report.is_file() and report.stat().st_size > 0
    assert path.stem in report.read_text(encoding="utf-8")  # the title names the experiment
