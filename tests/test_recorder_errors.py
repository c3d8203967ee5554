"""Bad input gets a one-line GradlabError naming the fix; remove() leaves the model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from test_recorder_support import hooks_left
from torch import nn

from gradlab.errors import GradlabError
from gradlab.recorder import GradientRecorder


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, r"every must be a positive.*every=1"),
        ({"every": -3}, r"every must be a positive"),
        ({"every": 1.5}, r"positive int or a callable"),
        ({"metrics": ["grad_norm", "grad_nrom"]}, r"unknown metric 'grad_nrom'.*choose from"),
        ({"metrics": "everything"}, r"unknown metric 'everything'"),
        ({"metrics": []}, r"metrics= is empty"),
        ({"layers": ["fc"]}, r"'fc' match no module.*named_modules"),
        ({"layers": nn.Conv2d}, r"layers= matched no"),
        ({"layers": lambda name, m: False}, r"layers= matched no"),
        ({"capacity": 0}, r"capacity must be a positive int"),
        ({"saturation_threshold": 1.5}, r"saturation_threshold must be a fraction"),
        ({"optimizer": "sgd"}, r"optimizer= must be a torch.optim.Optimizer"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, match):
    with pytest.raises(GradlabError, match=match) as exc:
        GradientRecorder(_model(), **kwargs)
    _one_line(exc)


@pytest.mark.parametrize("thing", [[nn.Linear(2, 2)], "resnet18", None, torch.zeros(2)])
def test_not_a_module(thing):
    with pytest.raises(GradlabError, match=r"needs a torch.nn.Module.*GradientRecorder\(model\)") as exc:
        GradientRecorder(thing)
    _one_line(exc)


def test_gradlab_error_is_a_value_error():
    with pytest.raises(ValueError):
        GradientRecorder(_model(), every=0)


def test_step_before_any_backward():
    model = _model()
    rec = GradientRecorder(model)
    model(torch.randn(2, 3))  # a forward alone is not enough
    with pytest.raises(GradlabError, match=r"before any backward\(\).*loss.backward\(\) first") as exc:
        rec.step()
    _one_line(exc)
    assert rec.current_step == 0
    model(torch.randn(2, 3)).sum().backward()
    assert rec.step()  # works once there are gradients
    rec.remove()


def test_step_in_optimizer_mode_and_after_remove():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = GradientRecorder(model, optimizer=opt)
    with pytest.raises(GradlabError, match=r"remove the rec.step\(\) call"):
        rec.step()
    rec.remove()
    with pytest.raises(GradlabError, match=r"was removed: create a new GradientRecorder"):
        rec.step()


def test_remove_is_idempotent_and_leaves_no_hooks():
    model = torchvision.models.resnet18(num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = hooks_left(model)
    rec = GradientRecorder(model, optimizer=opt, metrics="all")
    assert hooks_left(model)  # attached
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    rec.remove()
    rec.remove()
    assert hooks_left(model) == before == []
    assert not opt._optimizer_step_pre_hooks
    assert len(rec.to_frame()) > 0  # records stay readable
    with GradientRecorder(_model()) as rec2:
        pass
    rec2.remove()


def _run(model, opt, x, y, steps, rec=None):
    outs = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        outs.append(out.detach().clone())
        nn.functional.cross_entropy(out, y).backward()
        if rec is not None:
            rec.step()
        opt.step()
    grads = [p.grad.clone() for p in model.parameters()]
    return outs, grads


def _identical(a, b):
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.slow
def test_outputs_and_gradients_bit_identical_while_recording_and_after_remove():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    twin = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)

    with GradientRecorder(model, metrics="all") as rec:
        outs, grads = _run(model, opt, x, y, 2, rec)
    outs_t, grads_t = _run(twin, opt_twin, x, y, 2)
    assert _identical(outs, outs_t) and _identical(grads, grads_t)

    # after the with block: no hooks, and the model behaves exactly like the unhooked twin
    assert hooks_left(model) == []
    outs, grads = _run(model, opt, x, y, 1)
    outs_t, grads_t = _run(twin, opt_twin, x, y, 1)
    assert _identical(outs, outs_t) and _identical(grads, grads_t)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
