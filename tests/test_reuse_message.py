"""A reused run is said to be reused, with how to train it again: in experiments and in compare."""

from __future__ import annotations

import pytest

from gradlab.training.compare import compare_models
from gradlab.training.config import TrainConfig
from gradlab.training.experiment import run_experiment

TOML = """
name = "tiny"
[defaults]
data = "synthetic"
train_size = 64
eval_size = 32
batch_size = 16
steps = 2
eval_every = 2
eval_batches = 1
device = "cpu"
threads = 1
metrics = "default"
[grid]
model = ["mlp2:width=8", "mlp3:width=8"]
"""


@pytest.mark.slow
def test_second_experiment_run_says_its_points_were_reused(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TOML)
    run_experiment(path, out=tmp_path / "runs", quiet=False)
    assert "reused" not in capsys.readouterr().err
    run_experiment(path, out=tmp_path / "runs", quiet=False)
    assert ("2 of 2 grid points reused a finished run with the same settings; pass --rerun to "
            "train them again") in capsys.readouterr().err


@pytest.mark.slow
def test_compare_summary_marks_each_run_trained_or_reused(tmp_path):
    settings = TrainConfig(model="", train_size=64, eval_size=32, batch_size=16, steps=2, eval_every=2,
                           eval_batches=1, device="cpu", threads=1, metrics="default")
    first = compare_models(["mlp2:width=8"], settings, tmp_path, quiet=True)
    assert first.reused == [False] and "(trained)" in first.summary()
    both = compare_models(["mlp2:width=8", "mlp3:width=8"], settings, tmp_path, quiet=True)
    assert both.reused == [True, False]
    text = both.summary()
    assert "(reused)" in text and "(trained)" in text
    assert "pass --rerun to train them again" in text
    assert text.splitlines()[-1] == f"report: {both.report}"
