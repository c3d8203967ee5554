"""The first non-finite step and layer are exact when the step is not recorded, under the
GradScaler's skipped steps in optimizer mode, and in the training loop's stop and skip modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradlab.recorder import GradientRecorder


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _poison_output_grad(module: nn.Module, when: list[bool]):
    """dL/dh of ``module``'s output becomes NaN in one element while ``when[0]``: every layer up
    to it (in backward order from the loss) is finite, every layer below it non-finite."""
    def hook(mod, args, out):
        if when[0]:
            def to_nan(g):
                g = g.clone()
                g[0, 0] = float("nan")
                return g
            out.register_hook(to_nan)
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("metrics", [None, "all"])
def test_first_nonfinite_step_and_layer_are_exact_between_recorded_steps(metrics):
    model = _model()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    when = [False]
    handle = _poison_output_grad(model[2], when)  # NaN enters dL/dh at layer "2"'s output
    with GradientRecorder(model, every=4, metrics=metrics) as rec:
        for s in range(8):
            model.zero_grad()
            when[0] = s in (5, 6)  # steps 5 and 6 are not recorded (0 and 4 are)
            nn.functional.cross_entropy(model(x), y).backward()
            rec.step()
        # layer "2" owns weights whose gradient is dL/dh x input: the first NaN nearest the loss
        assert rec.nonfinite_first == {"step": 5, "layer": "2", "metric": "grad_norm"}
    handle.remove()
    assert set(rec.to_frame().step) == {0, 4}  # none of the bad steps was recorded


def test_no_nonfinite_gives_none():
    model = _model()
    with GradientRecorder(model, every=3) as rec:
        for _ in range(4):
            model.zero_grad()
            model(torch.randn(2, 4)).sum().backward()
            rec.step()
        assert rec.nonfinite_first is None


@pytest.mark.parametrize("give_scaler", [True, False])
def test_steps_the_grad_scaler_skips_are_located_in_optimizer_mode(give_scaler):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with GradientRecorder(model, optimizer=opt, every=5, scaler=scaler if give_scaler else None) as rec:
        for s in range(6):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            if s == 3:
                model[2].weight.grad[1, 1] = float("inf")  # the scaler skips this step
            scaler.step(opt)
            scaler.update()
        found = rec.nonfinite_first
    assert scaler.get_scale() < 4.0  # the premise: the scaler saw the inf and skipped
    want = {"step": 3, "layer": "2", "metric": "grad_norm"} if give_scaler else \
        {"step": 3, "layer": None, "metric": "skipped"}
    assert found == want
    assert "unscale_" not in scaler.__dict__  # the wrapper is gone after remove()
