"""The benchmark harness: its alternatives, statistics, memory count and fairness. No timing is asserted."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from gradlab.bench.overhead import (
    BenchConfig,
    Spread,
    _Bench,
    held_bytes,
    histc_loop,
    item_norm_loop,
    quantile,
    round_statistic,
    run_bench,
    steps_per_round,
    write_json,
)
from gradlab.cli import main
from gradlab.common import metrics as M
from gradlab.errors import GradlabError

TINY = "mlp2:width=8,size=4"  # 3x4x4 inputs, two linear layers


# -- the alternatives -------------------------------------------------------------------------------
def _model_with_grads() -> tuple[nn.Module, list[nn.Parameter]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Linear(3, 3))
    model[3].weight.requires_grad_(False)  # frozen: no gradient
    model(torch.randn(4, 5)).square().sum().backward()
    return model, list(model.parameters())


def test_item_loop_gives_each_gradient_norm_and_skips_missing_gradients():
    _, params = _model_with_grads()
    expected = [torch.linalg.vector_norm(p.grad).item() for p in params if p.grad is not None]
    assert len(expected) == len(params) - 1
    assert item_norm_loop(params) == pytest.approx(expected, rel=1e-6)


def test_histc_loop_counts_match_a_hand_made_histogram():
    p = nn.Parameter(torch.zeros(8))
    # range [0, 64]: 64 bins of width 1; values at bin centres, and the two ends
    p.grad = torch.tensor([0.0, 64.0, 0.5, 1.5, 1.5, 10.5, 63.5, 32.5])
    q = nn.Parameter(torch.zeros(3))  # no gradient: skipped
    (counts,) = histc_loop([p, q])
    assert counts.device.type == "cpu" and counts.shape == (64,)
    expected = np.zeros(64)
    for bin_, n in {0: 2, 1: 2, 10: 1, 32: 1, 63: 2}.items():
        expected[bin_] = n
    np.testing.assert_array_equal(counts.numpy(), expected)
    np.testing.assert_array_equal(counts.numpy(), np.histogram(p.grad.numpy(), bins=64, range=(0, 64))[0])


def test_histc_loop_on_real_gradients_counts_every_element():
    _, params = _model_with_grads()
    hists = histc_loop(params)
    with_grad = [p for p in params if p.grad is not None]
    assert [int(h.sum()) for h in hists] == [p.numel() for p in with_grad]


# -- statistics -------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], [0.9, 1.3, 1.1, 1.02, 0.97, 1.2]])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_quantile_matches_numpy_linear(values, q):
    assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_spread_of_ratios():
    s = Spread.of([1.04, 0.98, 1.01, 1.10, 1.00])
    assert (s.median, s.lo, s.hi, s.n) == (1.01, 0.98, 1.10, 5)
    assert s.q1 == pytest.approx(1.00) and s.q3 == pytest.approx(1.04)
    assert math.isnan(Spread.of([]).median)


def test_round_statistic_is_the_median_for_every_step_work():
    assert round_statistic([5.0, 1.0, 2.0, 100.0, 3.0], [0] * 5, 1) == 3.0


def test_round_statistic_weighs_the_recorded_phase_by_its_share():
    # every 5: phase 0 is the recorded step (10 ms), the others take 1 ms; one stray 50 ms step
    times = [10.0, 1.0, 1.0, 50.0, 1.0, 10.0, 1.0, 1.0, 1.0, 1.0]
    phases = [i % 5 for i in range(10)]
    # phase medians: 10, 1, 1, (50+1)/2, 1
    assert round_statistic(times, phases, 5) == pytest.approx((10 + 1 + 1 + 25.5 + 1) / 5)
    # a plain median would hide the recorded step altogether
    assert round_statistic(times, [0] * 10, 1) == 1.0


def test_steps_per_round_holds_whole_periods():
    assert steps_per_round(BenchConfig("resnet20")) == 10
    assert steps_per_round(BenchConfig("resnet20", every=(1, 4))) == 12
    assert steps_per_round(BenchConfig("resnet20", recorder_arms=(("all", 25),))) == 25
    assert steps_per_round(BenchConfig("resnet20", steps_per_round=7)) == 7


# -- memory -----------------------------------------------------------------------------------------
class _Holder:
    pass


def test_held_bytes_counts_buffers_once_and_leaves_out_the_model():
    param = nn.Parameter(torch.zeros(1000))
    grad = torch.zeros(1000)
    buf = torch.zeros(10, 8)  # 320 bytes
    h = _Holder()
    h.buf = buf
    h.row = buf[3]  # a view: same storage, not counted again
    h.params = [param]  # the model's, not the holder's
    h.grads = {"g": grad}  # excluded below
    h.module = nn.Linear(100, 100)
    h.chunk = np.zeros(25, dtype=np.float32)  # 100 bytes
    bare = held_bytes(h, torch.device("cpu"), exclude=[grad])
    assert bare["device"] == 320
    h.extra = torch.zeros(5, dtype=torch.float64)  # 40 more bytes
    assert held_bytes(h, torch.device("cpu"), exclude=[grad])["device"] == 360
    # on a CUDA run the same CPU tensors are host memory
    as_gpu = held_bytes(h, torch.device("cuda"), exclude=[grad])
    assert as_gpu["device"] == 0 and as_gpu["host"] >= 360 + 100
    # the array counts in host memory: dropping it lowers the count by at least its 100 bytes
    del h.chunk
    assert bare["host"] - held_bytes(h, torch.device("cpu"), exclude=[grad])["host"] >= 100


def test_held_bytes_follows_hook_closures():
    state = torch.zeros(64)  # 256 bytes held only by a closure

    def hook(*_):
        return state

    h = _Holder()
    h.hooks = [hook]
    assert held_bytes(h, torch.device("cpu"))["device"] == 256



class _Slotted:
    __slots__ = ("state",)


class _Owner:
    def __init__(self) -> None:
        self.state = torch.zeros(32)  # 128 bytes, held through a bound method

    def hook(self, *_):
        return self.state


def test_held_bytes_follows_bound_methods_slots_views_and_frames():
    cpu = torch.device("cpu")
    slotted = _Slotted()
    slotted.state = torch.zeros(16)  # 64 bytes, held in a slot
    h = _Holder()
    h.hooks = [_Owner().hook]
    h.slotted = slotted
    before = held_bytes(h, cpu)
    assert before["device"] == 128 + 64
    h.view = np.zeros(1000)[:10]  # a view keeps its whole 8000-byte array alive
    h.frame = pd.DataFrame({"v": np.zeros(1000)})  # 8000 bytes of values
    after = held_bytes(h, cpu)
    assert after["device"] == before["device"]
    assert after["host"] - before["host"] >= 8000 + 8000


def test_write_json_writes_strict_json(tmp_path):
    def refuse(name):
        raise AssertionError(f"{name} in the file")

    path = write_json({"nan": math.nan, "inf": [math.inf, 1.5], "np": np.float32(2.0), 3: "key"},
                      tmp_path / "f.json")
    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "nan": None, "inf": [None, 1.5], "np": 2.0, "3": "key"}


def test_synthetic_runs_hold_schema_metrics_in_layout_order():
    from gradlab.bench.report import LAYER_METRICS, synthetic_run
    from gradlab.bench.store import METRICS, make_frame

    assert list(LAYER_METRICS) == M.in_layout_order(LAYER_METRICS)
    assert all(M.metric(m).scope == "layer" for m in LAYER_METRICS)
    run = synthetic_run(steps=4, blocks=(1,), nonfinite_at=2)
    assert list(run.layers["metric"].cat.categories) == list(LAYER_METRICS)
    assert all(M.metric(m).scope == "step" for m in set(run.steps["metric"]))
    assert list(make_frame(0, 1)["metric"].cat.categories) == list(METRICS) == list(LAYER_METRICS)

# -- the harness end to end (tiny, CPU) ---------------------------------------------------------------
def test_arms_start_identical_and_stay_identical():
    """Fairness: every arm trains the same model from the same seed on the same batch."""
    config = BenchConfig(TINY, batch_size=4, device="cpu", recorder_arms=(("default", 1), ("all", 2)), warmup=0)
    bench = _Bench(config, progress=lambda _m: None)
    bench.build()
    names = [a.name for a in bench.arms]
    assert names[:2] == ["bare", "bare again (A/A control)"] and len(names) == 6
    assert {type(a.optimizer) for a in bench.arms} == {torch.optim.SGD}
    for _ in range(3):
        for arm in bench.arms:
            bench.step(arm)
    reference = bench.arms[0].model.state_dict()
    for arm in bench.arms[1:]:
        assert arm.model is not bench.arms[0].model
        for key, value in arm.model.state_dict().items():
            assert torch.equal(value, reference[key]), (arm.name, key)
    # the alternatives computed what they claim on the final gradients
    item = next(a for a in bench.arms if a.kind == "item")
    assert item.last == pytest.approx([torch.linalg.vector_norm(p.grad).item() for p in item.params], rel=1e-6)


@pytest.fixture(scope="module")
def tiny_result():
    config = BenchConfig(TINY, batch_size=4, device="cpu", recorder_arms=(("default", 1), ("all", 2)),
                         repeats=3, steps_per_round=2, warmup=1)
    return run_bench(config)


def test_run_bench_ratios_are_per_round(tiny_result):
    r = tiny_result
    assert r.rounds == 3 and r.steps_per_round == 2
    bare = r.arm("bare")
    assert bare.ratio.median == 1.0 and bare.ratio.n == 3 and bare.mean_ratio == 1.0
    for arm in r.arms:
        assert len(arm.round_ms) == 3 and all(t > 0 for t in arm.round_ms)
        expected = [a / b for a, b in zip(arm.round_ms, bare.round_ms, strict=True)]
        assert arm.ratio.median == pytest.approx(float(np.median(expected)))
        assert arm.ratio.lo == pytest.approx(min(expected)) and arm.ratio.hi == pytest.approx(max(expected))


def _values_recorded_directly(metrics, every: int, steps: int) -> int:
    """The reference: drive a recorder by hand for ``steps`` steps and count what it returns."""
    from gradlab.models import build_model
    from gradlab.recorder import GradientRecorder

    torch.manual_seed(0)
    model = build_model(TINY)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with GradientRecorder(model, every=every, metrics=metrics) as rec:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(4, 3, 4, 4)).logsumexp(1).mean().backward()
            rec.step()
            opt.step()
    return len(rec.to_frame()) + len(rec.step_frame())


def test_run_bench_recorder_recorded_on_its_schedule(tiny_result):
    from gradlab.models import build_model

    model = build_model(TINY)
    param_layers = sum(1 for m in model.modules() if next(m.parameters(recurse=False), None) is not None)
    default = tiny_result.arm("gradlab default, every 1")
    # default metrics: grad_norm and weight_norm per layer with parameters, plus the total norm
    assert default.records == default.steps_run * (2 * param_layers + 1)
    sparse = tiny_result.arm("gradlab all, every 2")
    assert sparse.steps_run > 2
    assert sparse.records == _values_recorded_directly("all", 2, sparse.steps_run)
    assert sparse.records != _values_recorded_directly("all", 1, sparse.steps_run)
    for arm in (default, sparse):
        mem = arm.memory
        assert mem["device_bytes"] > 0
        # at least the float32 value itself, and within what the recorder says it holds plus overhead
        assert mem["host_bytes_per_value"] >= 4
        assert mem["host_bytes_per_value"] >= mem["reported_host_bytes_per_value"] > 0


def test_run_bench_json_round_trip(tiny_result, tmp_path):
    from gradlab.bench.overhead import format_bench, write_json

    path = write_json(tiny_result, tmp_path / "sub" / "bench.json")
    data = json.loads(path.read_text())
    assert [a["name"] for a in data["arms"]] == [a.name for a in tiny_result.arms]
    assert not list(path.parent.glob(".*tmp"))
    text = format_bench(tiny_result)
    assert "gradlab all, every 2" in text and "noise floor" in text and "B per recorded value" in text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": (0,)}, "--every must be a positive integer"),
        ({"amp": "fp8"}, "unknown --amp"),
        ({"metrics": ("some",)}, "unknown --metrics"),
        ({"repeats": 1}, "at least 2"),
        ({"every": (2,), "steps_per_round": 3}, "not a multiple"),
        ({"input_size": 9}, "3x9x9"),
    ],
)
def test_bad_settings_get_one_line_errors(kwargs, match):
    with pytest.raises(GradlabError, match=match) as info:
        run_bench(BenchConfig(TINY, device="cpu", **kwargs))
    assert "\n" not in str(info.value)


# -- the command line ---------------------------------------------------------------------------------
def test_cli_help_has_examples():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "gradlab bench resnet20" in result.output
    assert "--every" in result.output and "--compile" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["resnet20", "--every", "0"],
        ["resnet20", "--amp", "fp8"],
        ["resnet20", "--metrics", "few"],
        ["resnet20", "--repeats", "1"],
        ["nosuchnet"],
        ["resnet20", "--device", "cuda:7"] if not torch.cuda.is_available() else ["resnet20", "--batch-size", "0"],
        [],
    ],
)
def test_cli_bad_input_exits_2(args):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_runs_and_writes_json(tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(main, ["bench", TINY, "--device", "cpu", "--batch-size", "4", "--repeats", "2",
                                       "--warmup", "1", "--steps-per-round", "2", "--every", "2",
                                       "--no-alternatives", "--no-control", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "gradlab default, every 2" in result.output
    data = json.loads(out.read_text())
    assert [a["name"] for a in data["arms"]] == ["bare", "gradlab default, every 2"]


@pytest.mark.slow
def test_gpu_script_smoke_writes_table_and_json(tmp_path):
    from gradlab.bench import gpu as bench_gpu

    assert bench_gpu.main(["--out", str(tmp_path), "--smoke", "--no-compile"]) == 0
    data = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [(r["case"], r["amp"]) for r in data["rows"]] == [
        (case, amp) for amp in ("none", "bf16") for case, *_ in bench_gpu.EAGER_CASES
    ]
    md = (tmp_path / "bench_gpu.md").read_text()
    assert md.count("| all metrics, every 10 steps |") == 2 and "wandb-like" in md


def test_compiled_arms_get_classes_of_their_own():
    """Each compiled arm needs its own classes, or dynamo would run one arm's graph for another."""
    from gradlab.bench.overhead import _own_classes
    from gradlab.models import build_model

    torch.manual_seed(0)
    a = build_model("resnet20")
    torch.manual_seed(0)
    b = build_model("resnet20")
    originals = [type(m) for m in b.modules()]
    _own_classes(b)
    for m_a, m_b, cls in zip(a.modules(), b.modules(), originals, strict=True):
        assert type(m_b) is not cls and isinstance(m_b, cls)
        assert type(m_b).__name__ == cls.__name__ and type(m_a) is cls
    # modules of one class in one arm share the arm's class
    convs = [m for m in b.modules() if isinstance(m, nn.Conv2d)]
    assert len({type(m) for m in convs}) == 1
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
