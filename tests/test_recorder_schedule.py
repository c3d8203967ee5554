"""The schedule, hooks attached only for recorded steps, buffering, pops and host memory."""

from __future__ import annotations

import torch
from test_recorder_support import param_reference, rows_at
from torch import nn

from gradlab.recorder import GradientRecorder


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _train(model, rec, steps, x=None):
    x = torch.randn(6, 4) if x is None else x
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    flags, refs = [], {}
    for s in range(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        refs[s] = param_reference(model, ["0", "2"])
        flags.append(rec.step())
        opt.step()
    return flags, refs


def test_every_n_records_every_nth_step_from_zero():
    model = _model()
    with GradientRecorder(model, every=3) as rec:
        flags, refs = _train(model, rec, 8)
    assert flags == [True, False, False, True, False, False, True, False]
    assert rec.current_step == 8
    frame = rec.to_frame()
    assert sorted(frame.step.unique()) == [0, 3, 6]
    for s in (0, 3, 6):
        want = {k: v for k, v in refs[s].items()}
        got = rows_at(frame, s)
        assert got.keys() == want.keys()
        for k in want:
            assert abs(got[k] - want[k]) <= 1e-6 * abs(want[k])
    assert sorted(rec.step_frame().step) == [0, 3, 6]


def test_callable_schedule_is_asked_once_per_step():
    asked = []

    def schedule(step):
        asked.append(step)
        return step in (1, 2, 5)

    model = _model()
    with GradientRecorder(model, every=schedule) as rec:
        flags, _ = _train(model, rec, 6)
    assert flags == [False, True, True, False, False, True]
    assert asked == list(range(7))  # 0..5, and 6 to decide on the hooks of the next step
    assert sorted(rec.to_frame().step.unique()) == [1, 2, 5]


def test_forward_hooks_attached_only_for_recorded_steps():
    model = _model()
    counts = []
    x = torch.randn(3, 4)
    with GradientRecorder(model, every=2, metrics="all") as rec:
        for _ in range(5):
            counts.append(sum(len(m._forward_hooks) for m in model))
            model(x).sum().backward()
            rec.step()
            model.zero_grad()
    # step 0 recorded (hooks on 3 layers), 1 not (none), 2 recorded, ...
    assert counts == [3, 0, 3, 0, 3]
    acts = rec.to_frame().query("metric == 'act_mean'")
    assert sorted(acts.step.unique()) == [0, 2, 4]


def test_default_metrics_need_no_hooks_after_the_first_forward():
    model = _model()
    with GradientRecorder(model) as rec:
        _train(model, rec, 1)
        assert all(not m._forward_hooks for m in model.modules())
        assert set(rec.to_frame().metric) == {"grad_norm", "weight_norm"}


def test_small_capacity_flushes_in_batches_without_losing_rows():
    model = _model()
    with GradientRecorder(model, capacity=2, metrics="all") as rec:
        _, refs = _train(model, rec, 7)
    frame = rec.to_frame()
    assert sorted(frame.step.unique()) == list(range(7))
    for s in range(7):
        got = rows_at(frame, s)
        for k, v in refs[s].items():
            assert abs(got[k] - v) <= 1e-6 * abs(v)
    assert (frame.groupby("step").size().iloc[1:] == frame.groupby("step").size().iloc[1]).all()


def test_pop_frame_returns_rows_since_last_pop_then_forgets_them():
    model = _model()
    rec = GradientRecorder(model, capacity=3)
    _train(model, rec, 2)
    first = rec.pop_frame()
    assert sorted(first.step.unique()) == [0, 1]
    assert rec.pop_frame().empty
    assert list(rec.pop_frame().columns) == ["step", "layer", "depth", "metric", "value"]
    _train(model, rec, 4)
    second = rec.pop_frame()
    assert sorted(second.step.unique()) == [2, 3, 4, 5]
    assert rec.to_frame().empty
    # the step frame is popped independently
    steps = rec.pop_step_frame()
    assert sorted(steps.step) == [0, 1, 2, 3, 4, 5]
    assert rec.pop_step_frame().empty
    rec.remove()


def test_frame_dtypes_and_order():
    model = _model()
    with GradientRecorder(model, metrics="all") as rec:
        _train(model, rec, 2)
    frame = rec.to_frame()
    assert str(frame.step.dtype) == "int64" and str(frame.depth.dtype) == "int64"
    assert str(frame.value.dtype) == "float64"
    assert isinstance(frame.layer.iloc[0], str) and isinstance(frame.metric.iloc[0], str)
    keys = list(zip(frame.step, frame.depth))
    assert keys == sorted(keys)


def test_host_memory_is_at_most_16_bytes_per_recorded_value():
    torch.manual_seed(1)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(10)])
    with GradientRecorder(model, metrics="all", capacity=8) as rec:
        x = torch.randn(4, 8)
        for _ in range(40):
            model(x).sum().backward()
            rec.step()
            model.zero_grad()
        rec._sync()
        held = rec.host_bytes
        n = len(rec.to_frame()) + len(rec.step_frame())
    assert n > 1000
    assert held / n <= 16


def test_nothing_keeps_activations_alive_after_the_step():
    import gc
    import weakref

    model = _model()
    refs = []

    def keep_ref(module, args, out):
        refs.append(weakref.ref(out))

    model[1].register_forward_hook(keep_ref)
    with GradientRecorder(model, metrics="all") as rec:
        loss = model(torch.randn(5, 4)).sum()
        loss.backward()
        rec.step()
        del loss
        gc.collect()
        assert refs and all(r() is None for r in refs)


def test_frames_before_any_step_are_empty_with_the_columns():
    rec = GradientRecorder(_model())
    assert list(rec.to_frame().columns) == ["step", "layer", "depth", "metric", "value"]
    assert rec.to_frame().empty and rec.step_frame().empty
    assert list(rec.step_frame().columns) == ["step", "metric", "value"]
    assert rec.nonfinite_first is None
    assert [r["name"] for r in rec.layer_table()] == ["0", "1", "2"]
    rec.remove()


def test_a_chosen_metric_list_records_exactly_those():
    model = _model()
    with GradientRecorder(model, metrics=["total_grad_norm"]) as rec:
        _train(model, rec, 2)
    assert rec.to_frame().empty
    assert rec.step_frame().metric.tolist() == ["total_grad_norm"] * 2
    with GradientRecorder(model, metrics=["act_std", "grad_norm"]) as rec:
        _train(model, rec, 1)
    assert set(rec.to_frame().metric) == {"act_std", "grad_norm"}
    assert rec.step_frame().empty
