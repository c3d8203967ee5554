"""AMP (bf16 autocast, GradScaler on the CPU), skipped steps, and gradient accumulation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_recorder_support import ALL_LAYER, ActCapture, assert_matches, expected_step, rows_at
from torch import nn

from gradlab.recorder import GradientRecorder


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


NAMES = ["0", "1", "2", "3", "4"]


def test_bf16_autocast_values_match_references():
    model = _mlp()
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with GradientRecorder(model, metrics="all") as rec:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        assert out.dtype == torch.bfloat16  # the premise: activations really are bf16
        nn.functional.cross_entropy(out.float(), y).backward()
        rec.step()
    cap = ActCapture(ref, NAMES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ref(x)
    nn.functional.cross_entropy(out.float(), y).backward()
    cap.remove()
    assert_matches(rows_at(rec.to_frame(), 0), expected_step(ref, cap, NAMES, ALL_LAYER))


def _scaled_run(model, opt, scaler, x, y, rec_mode, zero_first=False):
    if zero_first:
        opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x).float(), y)
    if not zero_first:
        opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if rec_mode is not None:  # step() mode: unscale first, as documented
        scaler.unscale_(opt)
        rec_mode.step()
    scaler.step(opt)
    scaler.update()


@pytest.mark.parametrize("mode", ["optimizer", "step"])
def test_grad_scaler_records_unscaled_values(mode):
    model = _mlp()
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    kwargs = {"optimizer": opt} if mode == "optimizer" else {}
    rec = GradientRecorder(model, metrics="all", scaler=scaler, **kwargs)
    _scaled_run(model, opt, scaler, x, y, None if mode == "optimizer" else rec)
    rec.remove()
    assert scaler.get_scale() == 2.0**12  # the premise: the loss really was scaled
    # the reference never sees a scaler: unscaling by a power of two is exact
    cap = ActCapture(ref, NAMES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(ref(x).float(), y)
    loss.backward()
    cap.remove()
    assert_matches(rows_at(rec.to_frame(), 0), expected_step(ref, cap, NAMES, ALL_LAYER))


@pytest.mark.parametrize("zero_first", [True, False])
def test_steps_skipped_by_the_scaler_are_counted(zero_first):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    bad = x.clone()
    bad[0, 0] = float("inf")
    with GradientRecorder(model, optimizer=opt, scaler=scaler, metrics="all") as rec:
        for s in range(4):
            _scaled_run(model, opt, scaler, bad if s == 1 else x, y, None, zero_first)
        assert scaler.get_scale() == 2.0**15  # the premise: the scaler skipped one step
        assert rec.current_step == 4  # step 1's skip was seen during step 2
    frame = rec.to_frame()
    assert sorted(frame.step.unique()) == [0, 2, 3]
    # the skipped step's activations (from the inf input) leak into no recorded step
    for s in (2, 3):
        sub = frame[frame.step == s]
        assert len(sub[sub.metric == "act_mean"]) == 5 and len(sub[sub.metric == "act_grad_norm"]) == 5
        # (act_grad_cos_class is NaN by definition here: the loop gives no labels)
        assert np.isfinite(sub[sub.metric != "act_grad_cos_class"].value).all()
    steps = rec.step_frame()
    assert steps.query("metric == 'skipped'")[["step", "value"]].values.tolist() == [[1, 1.0]]
    assert sorted(steps.query("metric == 'total_grad_norm'").step) == [0, 2, 3]


def test_accumulation_records_once_per_optimizer_step_on_accumulated_gradients():
    model = _mlp()
    ref = copy.deepcopy(model)
    k = 3
    xs = [torch.randn(4, 6) for _ in range(k)]
    ys = [torch.randint(0, 3, (4,)) for _ in range(k)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with GradientRecorder(model, optimizer=opt, metrics="all") as rec:
        for x, y in zip(xs, ys):
            (nn.functional.cross_entropy(model(x), y) / k).backward()
        opt.step()
        assert rec.current_step == 1
    cap = ActCapture(ref, NAMES)
    for x, y in zip(xs, ys):
        (nn.functional.cross_entropy(ref(x), y) / k).backward()
    cap.remove()
    assert len(cap.values["0"]) == k
    # act_grad_norm: one norm over all micro-batches' samples (sqrt of summed squares)
    assert_matches(rows_at(rec.to_frame(), 0), expected_step(ref, cap, NAMES, ALL_LAYER))
    assert set(rec.to_frame().step) == {0}
