"""A torch.compile'd model records the same values as eager, without graph breaks for the
default metrics. The backend is ``aot_eager`` (dynamo + AOTAutograd, no C++ compiler), which
keeps the test fast on a CPU; dynamo's tracing, where hooks break graphs, is the same."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch._dynamo as dynamo
from test_recorder_support import np_allclose_frames
from torch import nn

from gradlab.recorder import GradientRecorder


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )


def _train(model, rec, steps=3):
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
        opt.step()


def _frames(metrics, compiled: bool):
    model = _model()
    target = torch.compile(model, backend="aot_eager") if compiled else model
    with GradientRecorder(target, metrics=metrics) as rec:
        _train(target, rec)
    return rec.to_frame(), rec.step_frame(), rec.layer_table()


@pytest.mark.slow
def test_compiled_default_metrics_equal_eager_and_break_no_graph():
    dynamo.reset()
    dynamo.utils.counters.clear()
    eager = _frames(None, compiled=False)
    compiled = _frames(None, compiled=True)
    assert dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the premise: it compiled
    assert sum(dynamo.utils.counters["graph_break"].values()) == 0
    np_allclose_frames(compiled[0], eager[0], rtol=1e-4)
    np_allclose_frames(compiled[1].assign(layer="", depth=0), eager[1].assign(layer="", depth=0), rtol=1e-4)
    assert compiled[2] == eager[2]


@pytest.mark.slow
def test_compiled_all_metrics_equal_eager():
    dynamo.reset()
    eager = _frames("all", compiled=False)
    compiled = _frames("all", compiled=True)
    assert set(compiled[0].metric) == set(eager[0].metric)
    np_allclose_frames(compiled[0], eager[0], rtol=1e-4)
    assert compiled[2] == eager[2]


def test_recorder_attached_to_the_inner_model_of_a_compiled_wrapper():
    dynamo.reset()
    model = _model()
    compiled_model = torch.compile(model, backend="aot_eager")
    ref = copy.deepcopy(model)
    with GradientRecorder(model, metrics="all") as rec:  # the loop trains the wrapper
        _train(compiled_model, rec, steps=2)
    with GradientRecorder(ref, metrics="all") as rec_ref:
        _train(ref, rec_ref, steps=2)
    np_allclose_frames(rec.to_frame(), rec_ref.to_frame(), rtol=1e-4)


class _Twin(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def _record_second_twin(x):
    """Compile one instance and run it, then record a second instance of the same class."""
    first, second = _Twin(), _Twin()
    torch.compile(first, backend="aot_eager")(x).sum().backward()
    compiled = torch.compile(second, backend="aot_eager")
    with GradientRecorder(compiled, metrics="all") as rec:
        for _ in range(2):
            second.zero_grad()
            compiled(x).sum().backward()
            rec.step()
    return set(rec.to_frame().metric)


@pytest.mark.slow
def test_a_reused_graph_without_the_hooks_is_reported_and_the_named_fix_works():
    # dynamo does not guard on module hooks by default: the second instance runs the graph
    # traced for the first, and the recorder's forward hooks never run. That must not pass
    # silently, and the fix the warning names must bring the activation metrics back.
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    dynamo.reset()
    with pytest.warns(RuntimeWarning, match="skip_nnmodule_hook_guards = False") as caught:
        metrics = _record_second_twin(x)
    assert len([w for w in caught if "forward hooks ran" in str(w.message)]) == 1  # once
    assert "act_grad_norm" not in metrics  # the premise: the hooks did not run

    dynamo.reset()
    with dynamo.config.patch(skip_nnmodule_hook_guards=False), warnings.catch_warnings():
        warnings.filterwarnings("error", message="gradlab:", category=RuntimeWarning)
        metrics = _record_second_twin(x)
    assert {"act_grad_norm", "act_mean", "act_std", "act_zero_frac", "act_dead_units", "act_cos"} <= metrics
