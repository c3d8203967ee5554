"""The mean-field prediction against closed forms, Monte Carlo and autograd-measured gradients.

The key tests build deep plain nets, measure ||dL/dh|| at every layer's output with
``retain_grad`` and compare the fitted slope of log10 norm against depth with the prediction.
Tolerances come from the spread of that comparison over seeds (see the constants below).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.errors import GradlabError
from gradlab.theory.meanfield import chi, predict_profile, predicted_decay, qmap

# Measured slope minus predicted slope, decades per layer. Over seeds it stayed within 0.0035
# for width-256 MLPs and within 0.009 for the 32/64-channel conv net below; the rest is the
# finite-width bias of ReLU nets (a single net's log-norm runs below the log of the mean-field
# average, by about 0.5/width decades per layer) plus sampling noise.
MLP_SLOPE_TOL = 0.01
CONV_SLOPE_TOL = 0.015
# Largest deviation at any layer of the measured log10 profile from the predicted one, both
# taken relative to the last layer: the per-layer noise accumulates like a random walk.
MLP_PROFILE_TOL = 0.15
CONV_PROFILE_TOL = 0.25


# ----------------------------------------------------------------------------- helpers


def _init(model: nn.Module, init: str) -> nn.Module:
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if init == "default":
            continue
        if init == "xavier":
            nn.init.xavier_normal_(module.weight)
        elif init == "kaiming":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif init == "kaiming_fan_out":
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif init.startswith("normal:"):
            nn.init.normal_(module.weight, std=float(init.split(":")[1]))
        else:
            raise AssertionError(init)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def _mlp(widths: list[int], act: type[nn.Module], init: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act())
    return _init(nn.Sequential(*layers), init)


def _convnet(act: type[nn.Module], init: str, c1: int = 32, c2: int = 64) -> nn.Sequential:
    """20 layers: 3x3 convs at 16x16 (c1 channels), a stride-2 conv, 3x3 convs at 8x8, pool, fc."""
    layers: list[nn.Module] = [nn.Conv2d(3, c1, 3, padding=1), act()]
    for _ in range(9):
        layers += [nn.Conv2d(c1, c1, 3, padding=1), act()]
    layers += [nn.Conv2d(c1, c2, 3, stride=2, padding=1), act()]
    for _ in range(8):
        layers += [nn.Conv2d(c2, c2, 3, padding=1), act()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 10)]
    return _init(nn.Sequential(*layers), init)


def _measure(model: nn.Module, x: torch.Tensor, loss: str = "ce") -> np.ndarray:
    """||dL/dh|| at every Conv/Linear output, in forward order, from autograd."""
    outputs: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        output.retain_grad()
        outputs.append(output)

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        y = model(x)
        if loss == "ce":
            target = torch.randint(0, y.shape[1], (y.shape[0],), generator=torch.Generator().manual_seed(1))
            value = F.cross_entropy(y, target)
        else:  # a random linear read-out: dL/dy is isotropic noise
            value = (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum()
        value.backward()
    finally:
        for h in handles:
            h.remove()
    return np.array([float(o.grad.detach().double().norm()) for o in outputs])


def _slope(values: np.ndarray) -> float:
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


def _compare(model: nn.Module, input_size: tuple[int, ...], batch: int) -> tuple[float, float, float]:
    """(predicted slope, measured slope, largest per-layer deviation) in decades."""
    frame = predict_profile(model, input_size)
    x = torch.randn((batch, *input_size), generator=torch.Generator().manual_seed(2))
    measured = np.log10(_measure(model, x))
    assert len(measured) == len(frame)
    deviation = np.max(np.abs((measured - measured[-1]) - frame["pred_log10"].to_numpy()))
    return frame.attrs["decades_per_layer"], _slope(measured), float(deviation)


# ----------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("q", [1e-4, 0.3, 1.0, 17.0, 1e6])
def test_piecewise_linear_activations_have_their_closed_forms(q):
    assert chi("relu", q) == pytest.approx(0.5, rel=1e-12)
    assert qmap("relu", q) == pytest.approx(q / 2, rel=1e-12)
    slope = 0.2
    assert chi(f"leaky_relu:{slope}", q) == pytest.approx((1 + slope**2) / 2, rel=1e-12)
    assert qmap(f"leaky_relu:{slope}", q) == pytest.approx(q * (1 + slope**2) / 2, rel=1e-12)
    assert chi("identity", q) == pytest.approx(1.0, rel=1e-12)
    assert chi("linear", q) == pytest.approx(1.0, rel=1e-12)
    assert qmap("identity", q) == pytest.approx(q, rel=1e-12)


@pytest.mark.parametrize("q", [1e-3, 1.0, 1e4, 1e8])
def test_smooth_activation_matches_closed_form_even_when_its_derivative_is_a_spike(q):
    # phi(u) = erf(u / sqrt 2) has phi' = sqrt(2/pi) exp(-u^2/2), so E[phi'^2] = (2/pi) / sqrt(1+2q).
    # For large q, phi' is far narrower than the spacing of a plain Gauss-Hermite rule.
    def phi(u: torch.Tensor) -> torch.Tensor:
        return torch.erf(u / math.sqrt(2))

    assert chi(phi, q) == pytest.approx((2 / math.pi) / math.sqrt(1 + 2 * q), rel=1e-8)


@pytest.mark.parametrize("q", [0.3, 2.0, 7.3, 400.0])
def test_kinks_away_from_zero(q):
    # hardtanh' = 1 on (-1, 1): E[phi'^2] = P(|sqrt(q) z| < 1) = erf(1 / sqrt(2q)).
    exact = math.erf(1 / math.sqrt(2 * q))
    assert chi(F.hardtanh, q, kinks=(-1.0, 1.0)) == pytest.approx(exact, rel=1e-9)
    assert chi(F.hardtanh, q) == pytest.approx(exact, rel=2e-2)  # kinks unknown: panels straddle them
    # A traced nn.Hardtanh brings its kinks along.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60, bias=False), nn.Hardtanh(), nn.Linear(60, 5, bias=False))
    with torch.no_grad():
        model[0].weight.normal_(0, math.sqrt(q / 40))
    frame = predict_profile(model, (40,))
    row = frame.iloc[1]
    expected = 60 * row["var_w"] * math.erf(1 / math.sqrt(2 * frame["q"].iloc[0]))
    assert row["chi"] == pytest.approx(expected, rel=1e-9)


def test_sigmoid_chi_is_at_most_one_sixteenth():
    values = [chi("sigmoid", q) for q in np.geomspace(1e-6, 1e4, 25)]
    assert max(values) <= 1 / 16
    assert values[0] == pytest.approx(1 / 16, rel=1e-5)  # sigma'(0) = 1/4
    assert values[-1] < 1e-2  # saturated units pass almost nothing


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "leaky_relu"])
@pytest.mark.parametrize("q", [0.5, 3.0])
def test_quadrature_matches_monte_carlo(name, q):
    phi = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu, "leaky_relu": F.leaky_relu}[name]
    z = torch.randn(2**21, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u = (math.sqrt(q) * z).requires_grad_(True)
    y = phi(u)
    (dy,) = torch.autograd.grad(y.sum(), u)
    for estimate, samples in [(chi(name, q), dy.detach() ** 2), (qmap(name, q), y.detach() ** 2)]:
        standard_error = float(samples.std()) / math.sqrt(samples.numel())
        assert abs(estimate - float(samples.mean())) < 5 * standard_error + 1e-12


def test_bad_activation_and_q_are_refused():
    with pytest.raises(GradlabError, match="unknown activation"):
        chi("swishy", 1.0)
    with pytest.raises(GradlabError, match="q must be finite"):
        chi("tanh", -1.0)
    with pytest.raises(GradlabError, match="elementwise"):
        chi(lambda t: t.sum(), 1.0)


# ----------------------------------------------------------------------------- known answers


def test_he_init_with_relu_gives_chi_one_and_a_flat_profile():
    torch.manual_seed(0)
    model = _mlp([128] + [256] * 12 + [10], nn.ReLU, "kaiming")
    frame = predict_profile(model, (128,))
    inner = frame.iloc[1:]
    # chi = fan_in * Var(w) * 1/2, with Var(w) read from the weights (sampled: 2/fan_in to ~1%).
    np.testing.assert_allclose(inner["chi"], inner["fan_in"] * inner["var_w"] / 2, rtol=1e-9)
    # Var(w) is sampled: ~0.5% spread for the 256x256 layers, ~3% for the 2,560 weights of fc.
    np.testing.assert_allclose(inner["chi"].iloc[:-1], 1.0, rtol=0.02)
    assert inner["chi"].iloc[-1] == pytest.approx(1.0, rel=0.1)
    assert abs(frame.attrs["decades_per_layer"]) < 0.002
    assert list(frame["layer"]) == [str(i) for i in range(0, 25, 2)]
    assert frame["act"].iloc[0] == "relu" and frame["act"].iloc[-1] == ""


@pytest.mark.parametrize("std", [0.01, 0.05, 0.1])
def test_linear_net_with_normal_init_gives_fan_times_std_squared(std):
    torch.manual_seed(0)
    fan = 200
    model = _mlp([50] + [fan] * 8 + [10], nn.Identity, f"normal:{std}")
    frame = predict_profile(model, (50,))
    inner = frame.iloc[1:]
    np.testing.assert_allclose(inner["chi"], inner["fan_in"] * inner["var_w"], rtol=1e-9)  # E[phi'^2] = 1
    np.testing.assert_allclose(inner["chi"], fan * std**2, rtol=0.03)
    expected_slope = -0.5 * math.log10(fan * std**2)  # log10 ||g|| rises this much per layer
    assert frame.attrs["decades_per_layer"] == pytest.approx(expected_slope, abs=0.01)


@pytest.mark.parametrize("mode", ["kaiming", "kaiming_fan_out"])
def test_total_norm_uses_fan_in_and_per_unit_variance_uses_fan_out(mode):
    # Widths alternate 256/512. He fan-in keeps the total ||dL/dh|| flat (chi = 1) while the
    # per-unit variance zigzags; He fan-out keeps the per-unit variance (chi_unit = 1) while
    # the total zigzags by 2x. Measured by autograd, the zigzag must be where predicted.
    torch.manual_seed(0)
    widths = [64] + [256, 512] * 8 + [10]
    model = _mlp(widths, nn.ReLU, mode)
    frame = predict_profile(model, (64,))
    inner = frame.iloc[1:-1]
    ratio = (inner["fan_in"] / (inner["fan_out"])).to_numpy()
    if mode == "kaiming":
        np.testing.assert_allclose(inner["chi"], 1.0, rtol=0.05)
        np.testing.assert_allclose(inner["chi_unit"], 1 / ratio, rtol=0.05)
    else:
        np.testing.assert_allclose(inner["chi"], ratio, rtol=0.05)
        np.testing.assert_allclose(inner["chi_unit"], 1.0, rtol=0.05)
    x = torch.randn(1024, 64, generator=torch.Generator().manual_seed(2))
    measured = _measure(model, x)
    measured_chi = (measured[:-1] / measured[1:]) ** 2
    np.testing.assert_allclose(measured_chi[1:], frame["chi"].to_numpy()[2:], rtol=0.12)


def test_valid_fraction_and_chi_of_a_padded_conv_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, bias=False),
    )
    frame = predict_profile(model, (3, 8, 8))
    # 3x3 taps, padding 1, 8 positions per axis: (3*8 - 2) / (3*8) of the taps read real input.
    assert frame["valid_frac"].iloc[1] == pytest.approx((22 / 24) ** 2)
    # stride 2: outputs at rows 0, 2, 4, 6 read rows -1..1, 1..3, 3..5, 5..7: 11 of 12 taps.
    assert frame["valid_frac"].iloc[2] == pytest.approx((11 / 12) ** 2)
    # With no activation and a uniform gradient at the last output, the last chi is exactly
    # fan_in * Var(w) * valid_frac: the stride does not enter the total norm.
    last = frame.iloc[2]
    assert last["chi"] == pytest.approx(last["fan_in"] * last["var_w"] * last["valid_frac"], rel=1e-9)
    assert list(frame["numel"]) == [16 * 64, 16 * 64, 16 * 16]


def test_border_positions_are_tracked_not_averaged():
    # A deep linear conv net on 8x8 maps: zero padding leaves border entries with smaller
    # gradients, which then meet the border's missing taps. The per-position prediction follows
    # autograd; the position-averaged factor fan_in * Var(w) * valid_frac is ~7% per layer low.
    torch.manual_seed(0)
    channels = 32
    convs = [nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1, bias=False) for i in range(12)]
    for conv in convs:
        nn.init.normal_(conv.weight, std=(1 / (9 * channels)) ** 0.5)
    model = nn.Sequential(*convs)
    frame = predict_profile(model, (3, 8, 8))
    x = torch.randn(256, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    g = _measure(model, x, loss="random")
    measured = np.log10((g[:-1] / g[1:]) ** 2)
    predicted = np.log10(frame["chi"].to_numpy()[1:])
    averaged = np.log10((frame["fan_in"] * frame["var_w"] * frame["valid_frac"]).to_numpy()[1:])
    assert abs(np.mean(measured - predicted)) < 0.01
    assert np.mean(measured - averaged) > 0.02


def test_max_pooling_routes_the_gradient_to_the_window_maximum():
    # conv -> relu -> 3x3/2 max pool -> conv: the window's maximum is almost always positive,
    # so ||g||^2 loses almost nothing at the ReLU (factor ~1, where an elementwise ReLU gives 1/2).
    torch.manual_seed(0)
    model = _init(
        nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                      nn.Conv2d(64, 64, 3, padding=1)),
        "kaiming",
    )
    frame = predict_profile(model, (3, 16, 16))
    assert bool(frame["approx"].iloc[1])
    row = frame.iloc[1]
    assert row["chi"] / (row["fan_in"] * row["var_w"] * row["valid_frac"]) > 0.95
    g = _measure(model, torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(2)), loss="random")
    assert (g[0] / g[1]) ** 2 == pytest.approx(frame["chi"].iloc[1], rel=0.1)


def test_average_pool_and_dropout_factors():
    # relu -> dropout(p) -> 2x2 average pool -> linear: ||g||^2 picks up 1/(1-p) and 1/4 exactly.
    torch.manual_seed(0)
    p = 0.25
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1, bias=False), nn.ReLU(), nn.Dropout(p), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 5)
    )
    frame = predict_profile(model, (3, 8, 8))
    fc = frame.iloc[1]
    assert fc["chi"] == pytest.approx(fc["fan_in"] * fc["var_w"] * 0.5 / (1 - p) / 4, rel=1e-9)
    assert frame["act"].iloc[0] == "relu -> dropout(p=0.25) -> avg_pool2d"
    model.eval()  # dropout off: no 1/(1-p)
    frame = predict_profile(model, (3, 8, 8))
    assert frame["chi"].iloc[1] == pytest.approx(fc["fan_in"] * fc["var_w"] * 0.5 / 4, rel=1e-9)


def test_forward_variance_follows_the_weights_and_the_input_moment():
    torch.manual_seed(0)
    model = _mlp([100, 300, 300, 10], nn.Tanh, "default")
    frame = predict_profile(model, (100,), input_second_moment=4.0)
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["q"] == pytest.approx(100 * first["var_w"] * 4.0 + first["var_b"], rel=1e-12)
    assert second["q"] == pytest.approx(300 * second["var_w"] * qmap("tanh", first["q"]) + second["var_b"], rel=1e-6)
    x = 2.0 * torch.randn(4096, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h1 = model[0](x)
        h2 = model[2](model[1](h1))
    assert float((h1**2).mean()) == pytest.approx(first["q"], rel=0.05)
    assert float((h2**2).mean()) == pytest.approx(second["q"], rel=0.05)


# ----------------------------------------------------------------------------- measured vs predicted

INITS = ["default", "xavier", "kaiming", "normal:0.01"]
ACTS = {"identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("act", list(ACTS))
def test_deep_mlp_profile_matches_autograd(act, init):
    torch.manual_seed(0)
    model = _mlp([64] + [256] * 19 + [10], ACTS[act], init)  # 20 linear layers
    predicted, measured, deviation = _compare(model, (64,), batch=1024)
    assert abs(measured - predicted) < MLP_SLOPE_TOL, (predicted, measured)
    assert deviation < MLP_PROFILE_TOL


@pytest.mark.parametrize("init", INITS[:3] + ["normal:0.05"])
@pytest.mark.parametrize("act", list(ACTS))
def test_plain_conv_net_profile_matches_autograd(act, init):
    torch.manual_seed(0)
    model = _convnet(ACTS[act], init)
    predicted, measured, deviation = _compare(model, (3, 16, 16), batch=32)
    assert abs(measured - predicted) < CONV_SLOPE_TOL, (predicted, measured)
    assert deviation < CONV_PROFILE_TOL


def test_the_slope_tells_inits_apart():
    # The comparison above is only worth something if the predicted slopes differ by far more
    # than the tolerance: default init vanishes, He init is flat, a large normal explodes.
    slopes = {}
    for init in ["default", "kaiming", "normal:0.15"]:
        torch.manual_seed(0)
        slopes[init] = predict_profile(_mlp([64] + [256] * 19 + [10], nn.ReLU, init), (64,)).attrs["decades_per_layer"]
    assert slopes["default"] > 0.3
    assert abs(slopes["kaiming"]) < 0.01
    assert slopes["normal:0.15"] < -0.2


# ----------------------------------------------------------------------------- model zoo


def test_zoo_plain_net_without_norm_matches_autograd():
    from gradlab.models import build_model

    # 16-channel CIFAR nets are narrow: over 8 seeds the slope difference had sd 0.014.
    for spec in ["plain20:norm=none", "plain20:norm=none,init=kaiming", "plain20:norm=none,act=tanh"]:
        torch.manual_seed(0)
        model = build_model(spec, num_classes=10)
        predicted, measured, _ = _compare(model, (3, 32, 32), batch=32)
        assert abs(measured - predicted) < 0.04, (spec, predicted, measured)


def test_predicted_decay_of_a_spec():
    result = predicted_decay("mlp12:norm=none,act=sigmoid,width=64", seed=3)
    assert result["num_layers"] == 12
    assert result["decades_per_layer"] > math.log10(4)  # at least 4x per sigmoid layer (sigma' <= 1/4)
    frame = result["profile"]
    assert frame["layer"].iloc[0] == "layers.0.linear" and frame["layer"].iloc[-1] == "fc"
    assert predicted_decay("mlp12:norm=none,act=sigmoid,width=64", seed=3)["decades_per_layer"] == pytest.approx(
        result["decades_per_layer"], rel=1e-12
    )
    he = predicted_decay("plain20:norm=none,init=kaiming")
    default = predicted_decay("plain20:norm=none")
    assert default["decades_per_layer"] > 0.3 > 0.05 > he["decades_per_layer"]


# ----------------------------------------------------------------------------- what is refused


def test_normalisation_and_shortcuts_are_refused_in_one_line():
    from gradlab.models import build_model

    cases = [
        (build_model("plain20", num_classes=10), "without normalisation.*BatchNorm2d"),
        (build_model("resnet20:norm=none", num_classes=10), "not a plain chain"),
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "LayerNorm"),
    ]
    for model, pattern in cases:
        with pytest.raises(GradlabError, match=pattern) as info:
            predict_profile(model, (3, 32, 32) if not isinstance(model, nn.Sequential) else (4,))
        assert "\n" not in str(info.value)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(torch.relu(h) + h)


class _Sine(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


def test_unmodelled_ops_are_refused_and_activation_overrides():
    with pytest.raises(GradlabError, match="not a plain chain"):
        predict_profile(_Residual(), (8,))
    sine_net = nn.Sequential(nn.Linear(8, 16), _Sine(), nn.Linear(16, 4))
    with pytest.raises(GradlabError, match="'sin' in 1 between layers is not modelled"):
        predict_profile(sine_net, (8,))
    frame = predict_profile(sine_net, (8,), activation=torch.sin)
    q = frame["q"].iloc[0]
    expected = 16 * frame["var_w"].iloc[1] * chi(torch.sin, q)
    assert frame["chi"].iloc[1] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(GradlabError, match="before the first layer"):
        predict_profile(nn.Sequential(nn.Tanh(), nn.Linear(8, 4)), (8,))
    with pytest.raises(GradlabError, match="input_size"):
        predict_profile(nn.Sequential(nn.Linear(8, 4)), (9,))
    with pytest.raises(GradlabError, match="nn.Module"):
        predict_profile("mlp10", (8,))  # type: ignore[arg-type]


def test_prediction_leaves_the_model_and_its_hooks_untouched():
    torch.manual_seed(0)
    model = _mlp([16, 32, 32, 4], nn.ReLU, "default")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 16)
    expected = model(x)
    seen: list[torch.Size] = []

    def strict(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        output.register_hook(lambda g: None)  # fails without autograd, as a recorder's hook would
        seen.append(output.shape)

    handle = model[2].register_forward_hook(strict)
    predict_profile(model, (16,))
    assert seen == []  # the user's hook did not see the probe batch ...
    assert torch.equal(model(x), expected)
    assert seen == [torch.Size([5, 32])]  # ... and still works afterwards
    handle.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
