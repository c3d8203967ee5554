"""Optimisers and schedules against hand-computed learning rates."""

import math

import pytest
import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.training.optim import lr_factor_fn, make_optimizer, make_scheduler


def _lrs(schedule, total, warmup=0, base=0.1):
    model = nn.Linear(2, 2)
    opt = make_optimizer(model, "sgd", lr=base)
    sched = make_scheduler(opt, schedule, total, warmup)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_divides_by_ten_at_milestones():
    lrs = _lrs("step:3,5", 7)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_step_schedule_with_factor():
    assert _lrs("step:2@0.5", 4) == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_cosine_runs_from_base_to_zero():
    lrs = _lrs("cosine", 5)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(5)]
    assert lrs == pytest.approx(expected)


def test_warmup_is_linear_then_constant():
    assert _lrs("constant", 5, warmup=4) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


@pytest.mark.parametrize(
    "name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizers_by_name(name, cls):
    model = nn.Linear(3, 1)
    opt = make_optimizer(model, name, lr=0.01, weight_decay=0.1)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_frozen_parameters_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(model, "sgd", lr=0.1)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model[0].weight) not in ids and id(model[1].weight) in ids


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lr_factor_fn("linear", 10), "unknown schedule"),
        (lambda: lr_factor_fn("step:", 10), "step:M1,M2"),
        (lambda: lr_factor_fn("step:a,b", 10), "step:M1,M2"),
        (lambda: make_optimizer(nn.Linear(1, 1), "lbfgs", lr=0.1), "sgd, adam, adamw"),
        (lambda: make_optimizer(nn.Linear(1, 1), "sgd", lr=-1), "positive"),
        (lambda: make_optimizer(nn.Linear(1, 1), "sgd", lr=0.1, momentum=0, nesterov=True), "momentum"),
    ],
)
def test_bad_settings_are_refused(call, match):
    with pytest.raises(GradlabError, match=match):
        call()
