"""Clipping methods against independent references: torch's clip_grad_norm_, clamp, a per-row
AGC loop, numpy percentiles, a hand-run EMA; plus non-finite gradients, no host syncs, bad specs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.training.clipping import AGCClipper, ClipResult, parse_clip


class Small(nn.Module):
    """Conv, BN and linear layers: 4-d, 2-d and 1-d parameters, some sharing a shape, a final fc."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4 * 4 * 4, 6)
        self.mid1 = nn.Linear(6, 6)  # two layers of one shape: AGC clips them as a group
        self.mid2 = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        h = torch.relu(self.hidden(h))
        return self.fc(torch.relu(self.mid2(torch.relu(self.mid1(h)))))


def small_with_grads(seed: int = 0, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    model = Small()
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    for p in model.parameters():
        p.grad.mul_(scale)
    return model


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def total_norm(tensors) -> float:
    return float(np.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors)))


def assert_scalar_result(result: ClipResult) -> None:
    for field in ("threshold", "fired", "norm_before", "norm_after"):
        value = getattr(result, field)
        assert isinstance(value, torch.Tensor) and value.dim() == 0, field


# -- none and norm ----------------------------------------------------------------------------------


def test_none_measures_the_norm_and_changes_nothing():
    model = small_with_grads()
    before = grads(model)
    result = parse_clip("none").clip(model.parameters())
    assert_scalar_result(result)
    for a, b in zip(before, grads(model)):
        assert torch.equal(a, b)
    assert float(result.norm_before) == pytest.approx(total_norm(before), rel=1e-6)
    assert float(result.norm_after) == float(result.norm_before)
    assert float(result.fired) == 0.0 and math.isinf(float(result.threshold))


@pytest.mark.parametrize("max_norm", [0.05, 0.5, 100.0])
def test_norm_clipping_equals_clip_grad_norm(max_norm):
    ours, ref = small_with_grads(), small_with_grads()
    result = parse_clip(f"norm:{max_norm}").clip(ours.parameters())
    expected_norm = nn.utils.clip_grad_norm_(ref.parameters(), max_norm)
    for a, b in zip(grads(ours), grads(ref)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    torch.testing.assert_close(result.norm_before, expected_norm)
    assert float(result.norm_after) == pytest.approx(total_norm(grads(ref)), rel=1e-5)
    assert float(result.fired) == float(float(expected_norm) > max_norm)
    assert float(result.threshold) == pytest.approx(max_norm)


def test_norm_clipping_over_mixed_dtypes_equals_clip_grad_norm():
    ours, ref = [], []
    gen = torch.Generator().manual_seed(0)
    for shape, dtype in (((5, 3), torch.float32), ((7,), torch.float64), ((2, 2, 3), torch.float32)):
        g = torch.randn(*shape, generator=gen, dtype=dtype)
        for bucket in (ours, ref):
            p = torch.zeros(shape, dtype=dtype, requires_grad=True)
            p.grad = g.clone()
            bucket.append(p)
    result = parse_clip("norm:0.3").clip(ours)
    expected = nn.utils.clip_grad_norm_(ref, 0.3)
    assert float(result.norm_before) == pytest.approx(float(expected), rel=1e-6)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)


# -- value --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound, fires", [(0.01, True), (1e3, False)])
def test_value_clipping_equals_clamp(bound, fires):
    model = small_with_grads()
    before = grads(model)
    result = parse_clip(f"value:{bound}").clip(model.parameters())
    expected = [g.clamp(-bound, bound) for g in before]
    for a, b in zip(grads(model), expected):
        assert torch.equal(a, b)
    assert float(result.fired) == float(fires)
    assert float(result.norm_before) == pytest.approx(total_norm(before), rel=1e-6)
    assert float(result.norm_after) == pytest.approx(total_norm(expected), rel=1e-6)


# -- AGC -------------------------------------------------------------------------------------------------


def agc_reference(weight: np.ndarray, grad: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """Unit-wise clipping by a plain loop over output units (rows); 1-d tensors are one unit."""
    out = grad.astype(np.float64).copy()
    if weight.ndim <= 1:
        w_rows, g_rows = [weight.reshape(-1)], [out.reshape(-1)]
    else:
        w_rows = [weight[i].reshape(-1) for i in range(len(weight))]
        g_rows = [out[i].reshape(-1) for i in range(len(out))]
    clipped = []
    for k, (w, g) in enumerate(zip(w_rows, g_rows)):
        limit = lam * max(np.sqrt((w.astype(np.float64) ** 2).sum()), eps)
        g_norm = np.sqrt((g ** 2).sum())
        if g_norm > limit:
            g *= limit / g_norm
            clipped.append(k)
        if weight.ndim <= 1:
            out = g.reshape(grad.shape)
        else:
            out[k] = g.reshape(out[k].shape)
    return out, clipped


def test_agc_equals_a_per_row_loop_and_skips_the_final_linear():
    lam, eps = 0.05, 1e-3
    model = small_with_grads(scale=3.0)
    with torch.no_grad():
        model.bn.bias.fill_(0.0)  # zero weight: the eps floor decides the limit
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    clipper = parse_clip(f"agc:{lam},eps={eps}")
    assert isinstance(clipper, AGCClipper)
    clipper.prepare(model)
    assert clipper.excluded_names == ["fc.weight", "fc.bias"]
    result = clipper.clip(model.parameters())

    n_clipped, n_units = 0, 0
    for name, p in model.named_parameters():
        if name.startswith("fc."):
            assert torch.equal(p.grad, before[name]), f"{name} must be left alone"
            continue
        expected, clipped = agc_reference(p.detach().numpy(), before[name].numpy(), lam, eps)
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-5, atol=1e-9, err_msg=name)
        n_clipped += len(clipped)
        n_units += 1 if p.dim() <= 1 else p.shape[0]
    assert 0 < n_clipped < n_units, "the test needs some units clipped and some not"
    assert float(result.fired) == 1.0
    assert float(result.threshold) == pytest.approx(lam)
    assert float(result.norm_before) == pytest.approx(total_norm(before.values()), rel=1e-6)
    assert float(result.norm_after) == pytest.approx(total_norm(p.grad for p in model.parameters()), rel=1e-6)


def test_agc_handles_non_contiguous_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    conv.weight.grad = torch.randn(5, 3, 3, 3).to(memory_format=torch.channels_last)
    before = conv.weight.grad.clone()
    parse_clip("agc:0.01").clip([conv.weight])
    expected, _ = agc_reference(conv.weight.detach().numpy(), before.contiguous().numpy(), 0.01, 1e-3)
    np.testing.assert_allclose(conv.weight.grad.contiguous().numpy(), expected, rtol=1e-5)


def test_agc_that_clips_nothing_does_not_fire():
    model = small_with_grads(scale=1e-6)
    before = grads(model)
    clipper = parse_clip("agc:0.16")
    clipper.prepare(model)
    result = clipper.clip(model.parameters())
    assert float(result.fired) == 0.0
    for a, b in zip(before, grads(model)):
        assert torch.equal(a, b)


# -- AutoClip ----------------------------------------------------------------------------------------------


def single(value: float) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([float(value), 0.0, 0.0, 0.0])
    return p


@pytest.mark.parametrize("spec, window", [("autoclip:10", None), ("autoclip:25,window=7", 7)])
def test_autoclip_threshold_is_the_percentile_of_the_history(spec, window):
    clipper = parse_clip(spec)
    percentile = float(spec.split(":")[1].split(",")[0])
    rng = np.random.default_rng(0)
    norms = rng.lognormal(0.0, 0.7, size=40)
    history = []
    for step, n in enumerate(norms):
        p = single(n)
        result = clipper.clip([p])
        history.append(n)
        seen = history if window is None else history[-window:]
        expected = np.percentile(seen, percentile)  # the current norm is part of the history
        assert float(result.threshold) == pytest.approx(expected, rel=1e-5), step
        assert float(result.norm_before) == pytest.approx(n, rel=1e-6)
        assert float(result.norm_after) == pytest.approx(min(n, expected), rel=1e-5)
        assert float(result.fired) == float(n > expected + 1e-9 * expected)
        assert float(p.grad.norm()) == pytest.approx(min(n, expected), rel=1e-5)


def test_autoclip_history_grows_past_its_first_buffer():
    clipper = parse_clip("autoclip:50")
    norms = np.arange(1, 1101, dtype=np.float64)
    for n in norms:
        result = clipper.clip([single(n)])
    assert len(clipper.history) == 1100
    assert float(result.threshold) == pytest.approx(np.percentile(norms, 50), rel=1e-6)


# -- z-score --------------------------------------------------------------------------------------------------


def test_zscore_fires_on_a_spike_after_warmup_and_not_before():
    z, alpha, warmup = 2.5, 0.9, 10
    clipper = parse_clip(f"zscore:{z},alpha={alpha},warmup={warmup}")
    rng = np.random.default_rng(1)
    norms = list(1.0 + 0.05 * rng.standard_normal(30))
    norms[4] = 50.0  # a spike inside the warm-up: never clipped
    norms[20] = 50.0  # a spike after it: clipped to mean + z*std
    mean = var = None
    for step, n in enumerate(norms):
        result = clipper.clip([single(n)])
        if step < warmup:
            assert float(result.fired) == 0.0 and math.isinf(float(result.threshold))
            after = n
        else:
            limit = mean + z * math.sqrt(var)
            assert float(result.threshold) == pytest.approx(limit, rel=1e-5)
            assert float(result.fired) == float(n > limit), step
            after = min(n, limit)
        assert float(result.norm_after) == pytest.approx(after, rel=1e-5)
        # the reference statistics: plain mean/variance of the warm-up, then an EMA of the
        # norm after clipping
        if step == warmup - 1:
            mean, var = float(np.mean(norms[:warmup])), float(np.var(norms[:warmup]))
        elif step >= warmup:
            mean = alpha * mean + (1 - alpha) * after
            var = alpha * var + (1 - alpha) * (after - mean) ** 2
    assert float(clipper.mean) == pytest.approx(mean, rel=1e-5)


def test_zscore_fires_only_on_the_spike():
    clipper = parse_clip("zscore:2.5,warmup=5")
    rng = np.random.default_rng(2)
    fired = []
    for step in range(40):
        n = 100.0 if step == 30 else 1.0 + 0.1 * rng.standard_normal()
        fired.append(float(clipper.clip([single(n)]).fired))
    assert fired[30] == 1.0
    assert sum(fired) == 1.0


# -- non-finite gradients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("spec", ["none", "norm:0.1", "agc:0.01", "autoclip:10", "zscore:2.5,warmup=2"])
def test_nonfinite_gradients_are_reported_and_left_alone(spec, bad):
    clipper = parse_clip(spec)
    model = small_with_grads()
    clipper.prepare(model)
    for _ in range(3):  # some finite history first
        clipper.clip(small_with_grads().parameters())
    model.hidden.weight.grad[0, 0] = bad
    before = grads(model)
    result = clipper.clip(model.parameters())
    assert not math.isfinite(float(result.norm_before))
    assert float(result.fired) == 0.0
    for a, b in zip(before, grads(model)):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=0, atol=0)
    # the next finite step is clipped normally again, statistics untouched by the bad one
    result = clipper.clip(small_with_grads().parameters())
    assert math.isfinite(float(result.norm_before)) and math.isfinite(float(result.norm_after))
    assert not math.isnan(float(result.threshold))


def test_value_clipping_with_nonfinite_gradients_does_not_crash():
    model = small_with_grads()
    model.hidden.weight.grad[0, 0] = math.inf
    model.hidden.weight.grad[0, 1] = math.nan
    result = parse_clip("value:0.5").clip(model.parameters())
    assert math.isnan(float(result.norm_before))
    assert float(result.fired) == 0.0
    assert float(model.hidden.weight.grad[0, 0]) == 0.5 and math.isnan(float(model.hidden.weight.grad[0, 1]))


# -- no host synchronisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["none", "norm:0.1", "value:0.01", "agc:0.01", "autoclip:10", "zscore:2.5,warmup=2"])
def test_clip_never_reads_a_tensor_value_on_the_host(spec, monkeypatch):
    """Python-level reads of tensor values (the host syncs on a GPU) raise inside clip()."""
    clipper = parse_clip(spec)
    model = small_with_grads()
    clipper.prepare(model)

    def refuse(*args, **kwargs):
        raise AssertionError("clip() read a tensor value on the host")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(4):  # through warm-up and history growth paths
        clipper.clip(model.parameters())
    monkeypatch.undo()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["none", "norm:0.1", "value:0.01", "agc:0.01", "autoclip:10", "zscore:2.5,warmup=2"])
def test_clip_makes_no_cuda_sync(spec):
    model = small_with_grads().cuda()
    x = torch.randn(8, 2, 6, 6, device="cuda")
    clipper = parse_clip(spec)
    clipper.prepare(model)
    for _ in range(5):
        model.zero_grad()
        model(x).square().mean().backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            result = clipper.clip(model.parameters())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert result.norm_before.device.type == "cuda"


# -- parsing --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, name",
    [
        (None, "none"),
        ("none", "none"),
        ("NORM:1.0", "norm:1"),
        ("value:0.5", "value:0.5"),
        ("agc", "agc:0.01"),
        ("agc:0.02,eps=1e-4", "agc:0.02,eps=0.0001"),
        ("autoclip", "autoclip:10"),
        ("autoclip:5,window=100", "autoclip:5,window=100"),
        ("zscore", "zscore:2.5"),
        ("zscore:3,alpha=0.9,warmup=10", "zscore:3,alpha=0.9,warmup=10"),
    ],
)
def test_valid_specs(spec, name):
    clipper = parse_clip(spec)
    assert clipper.name == name
    assert parse_clip(clipper.name).name == name  # the name is itself a valid spec


@pytest.mark.parametrize(
    "spec, why",
    [
        ("norm", "needs a threshold"),
        ("norm:x", "not a number"),
        ("norm:-1", "positive"),
        ("norm:inf", "positive"),
        ("value:0", "positive"),
        ("clip:1", "unknown method"),
        ("agc:0.01,beta=2", "unknown option 'beta'"),
        ("agc:0.01,eps", "not KEY=VALUE"),
        ("autoclip:101", "percentile"),
        ("autoclip:10,window=0", "at least 1"),
        ("zscore:2.5,alpha=1.5", "alpha"),
        ("zscore:2.5,warmup=2.5", "whole number"),
        ("norm:1,window=3", "unknown option"),
    ],
)
def test_bad_specs_are_one_line_errors_naming_the_valid_forms(spec, why):
    with pytest.raises(GradlabError, match=why) as err:
        parse_clip(spec)
    message = str(err.value)
    assert "\n" not in message
    assert "norm:T" in message and "agc:LAMBDA" in message and "zscore:Z" in message
