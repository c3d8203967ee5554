"""Progress off a terminal, and the thread count as part of a CPU run's identity."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch

from gradlab.training.config import TrainConfig
from gradlab.training.loop import DEFAULT_STEPS, resolve_settings, run_id
from gradlab.training.progress import LineProgress, progress


def test_line_progress_prints_every_five_percent_and_the_end():
    out = io.StringIO()
    bar = progress(300, "plain34", stream=out)  # a StringIO is not a terminal
    assert isinstance(bar, LineProgress)
    for _ in range(300):
        bar.set_postfix({"loss": "2.301"})
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # 15, 30, ..., 300
    assert lines[0].startswith("plain34: step 15/300 (5%), loss 2.301, ")
    assert lines[-1].startswith("plain34: step 300/300 (100%)")


def test_closing_early_prints_where_the_run_stopped():
    out = io.StringIO()
    bar = progress(100, "mlp4", stream=out)
    for _ in range(7):
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("mlp4: step 7/100 (7%)")


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    bar = progress(10, "x", stream=out, disable=True)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


def _legacy_id(config: TrainConfig) -> str:
    """The run id as gradlab computed it before the thread count existed: a sha256 of the
    canonical JSON of every setting."""
    values = config.to_dict()
    values.pop("threads")
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_unresolved_threads_keep_the_ids_of_runs_recorded_before_the_field():
    config = TrainConfig(model="resnet20", steps=80, optimizer="sgd", lr=0.05)
    assert run_id(config) == _legacy_id(config)


def test_cpu_runs_carry_their_thread_count_and_differ_by_it():
    config = TrainConfig(model="resnet20", device="cpu")
    resolved = resolve_settings(config)
    assert resolved.threads == torch.get_num_threads()
    assert resolved.steps == DEFAULT_STEPS["cpu"]
    one = resolve_settings(TrainConfig(model="resnet20", device="cpu", threads=1))
    two = resolve_settings(TrainConfig(model="resnet20", device="cpu", threads=2))
    assert (one.threads, two.threads) == (1, 2)
    assert run_id(one) != run_id(two)


def test_explicit_length_is_kept():
    resolved = resolve_settings(TrainConfig(model="resnet20", device="cpu", steps=7))
    assert resolved.steps == 7
    by_epochs = resolve_settings(TrainConfig(model="resnet20", device="cpu", epochs=0.5))
    assert by_epochs.steps is None and by_epochs.epochs == 0.5


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_thread_counts_are_refused_in_one_line(bad):
    from gradlab.errors import GradlabError

    with pytest.raises(GradlabError,
                       match=r"threads must be a whole number from 1 to 4,096, got .*: pass e.g. --threads 2"):
        TrainConfig(model="resnet20", threads=bad).validate()
