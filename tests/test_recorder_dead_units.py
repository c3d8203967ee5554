"""act_zero_frac, act_dead_units and act_dead_units_run against hand-made dead units; the
store reading old runs' act_dead_frac as the zero fraction it was."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_recorder_support import rows_at
from torch import nn

from gradlab.recorder import GradientRecorder
from gradlab.store.legacy import rename_legacy_metrics

DEAD = ["act_zero_frac", "act_dead_units", "act_dead_units_run"]


def _kill(lin: nn.Linear, units: list[int]) -> None:
    with torch.no_grad():
        lin.weight[units] = 0.0
        lin.bias[units] = -1.0  # ReLU(-1) = 0 for every input


def test_dead_units_are_units_zero_for_every_example_not_zero_elements():
    torch.manual_seed(0)
    lin = nn.Linear(5, 8)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(8, 2))
    _kill(lin, [1, 6])
    x = torch.randn(16, 5)
    with GradientRecorder(model, metrics=DEAD, every=1) as rec:
        model(x).sum().backward()
        rec.step()
        _kill(lin, [3])  # one more dead unit at the second step
        with torch.no_grad():
            lin.bias[1] = 50.0  # unit 1 comes back to life
        model(x).sum().backward()
        rec.step()
    frame = rec.to_frame()
    s0, s1 = rows_at(frame, 0), rows_at(frame, 1)
    out0 = torch.relu(nn.functional.linear(x, lin.weight, lin.bias))  # second-step weights
    assert s0[("1", "act_dead_units")] == 2 / 8
    assert s1[("1", "act_dead_units")] == 2 / 8  # units 3 and 6
    assert s0[("1", "act_dead_units_run")] == 2 / 8
    assert s1[("1", "act_dead_units_run")] == 1 / 8  # only unit 6 was dead at both steps
    # the zero fraction counts elements, and is far above the dead-unit fraction
    assert s1[("1", "act_zero_frac")] == pytest.approx(float((out0 == 0).double().mean()), abs=1e-7)
    assert s1[("1", "act_zero_frac")] > 0.4


def test_a_unit_is_a_channel_of_a_convolution_and_a_feature_of_a_token():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight[2] = 0.0
        conv.bias[2] = -1.0
    cnn = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 2))
    lin = nn.Linear(3, 5)
    _kill(lin, [0, 4])
    seq = nn.Sequential(lin, nn.ReLU(), nn.Linear(5, 2))  # N x T x D outputs
    conv1d = nn.Conv1d(3, 6, 1)
    with torch.no_grad():
        conv1d.weight[5] = 0.0
        conv1d.bias[5] = -1.0
    cnn1d = nn.Sequential(conv1d, nn.ReLU(), nn.Flatten(), nn.Linear(6 * 7, 2))  # N x C x L
    for model, x, want in ((cnn, torch.randn(3, 2, 5, 5), 1 / 4), (seq, torch.randn(3, 7, 3), 2 / 5),
                           (cnn1d, torch.randn(3, 3, 7), 1 / 6)):
        with GradientRecorder(model, metrics=DEAD) as rec:
            model(x).sum().backward()
            rec.step()
        assert rows_at(rec.to_frame(), 0)[("1", "act_dead_units")] == pytest.approx(want)


def test_old_runs_act_dead_frac_is_read_as_the_zero_fraction():
    old = pd.DataFrame({"step": [0, 0], "layer": ["relu", "relu"], "depth": [0, 0],
                        "metric": pd.Categorical(["act_dead_frac", "act_mean"]), "value": [0.5, 0.1]})
    assert rename_legacy_metrics(old)["metric"].tolist() == ["act_zero_frac", "act_mean"]
    plain = old.assign(metric=old.metric.astype(str))
    assert rename_legacy_metrics(plain)["metric"].tolist() == ["act_zero_frac", "act_mean"]
    # a run that has dead units is a new run: its names stay as they are
    new = pd.DataFrame({"metric": pd.Categorical(["act_dead_frac", "act_dead_units"])})
    assert rename_legacy_metrics(new)["metric"].tolist() == ["act_dead_frac", "act_dead_units"]


def test_load_run_reads_a_stored_old_run_act_dead_frac_as_act_zero_frac(tmp_path):
    from gradlab.store import RunWriter, load_run

    rows = pd.DataFrame({"step": [0, 0], "layer": ["1", "1"], "depth": [1, 1],
                         "metric": ["act_dead_frac", "act_mean"], "value": [0.49, 0.2]})
    with RunWriter(tmp_path / "old", {"model": "mlp3"}) as writer:
        writer.append_layers(rows)
    metrics = set(load_run(tmp_path / "old").layers.metric)
    assert metrics == {"act_zero_frac", "act_mean"}
