"""The rule table is the mean-field propagation's single dispatch.

Every rule in ``RULES`` (and the fallback for ops without one) is run on a net with one op of
its kind between two layers, and the predicted pre-activation variance q and squared-norm
factor chi are compared with a hand computation from the layer's actual weights, or with a
float64 Monte-Carlo estimate of the Gaussian expectation where no closed form is at hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.theory import rules
from gradlab.theory.meanfield import predict_profile

MC_SAMPLES = 2_000_000
MC_REL = 5e-3  # several standard errors of a 2e6-sample mean of these integrands
EXACT_REL = 1e-9


def _var(t: torch.Tensor | None) -> float:
    """Mean squared entry in float64: the var_w / var_b the theory reads from a layer."""
    return 0.0 if t is None else float((t.detach().double() ** 2).mean())


def _normal(n: int, k: int = 1) -> torch.Tensor:
    """n float64 draws of the largest of k independent standard normals."""
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(n, k, generator=gen, dtype=torch.float64).amax(1)


class _Fn(nn.Module):
    """A module that applies a plain function, to put a bare torch call between layers."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# Each case: (model, input size, predict_profile kwargs, expected {column: value at depth 1},
# relative tolerance). Layer 0's q is checked against its hand formula in every case.
Case = tuple[nn.Module, tuple[int, ...], dict, dict[str, float], float]


def _layer_case() -> Case:
    # Conv (no padding) -> ReLU -> 1x1 conv. Q0 = fan_in * var_w * E[x^2] + var_b with
    # fan_in = 2 * 3 * 3; the 1x1 conv hands each input entry var_w * 4 outputs' G, so over the
    # 3 channels chi = 3 * var_w1 * E[relu'^2] = 3 * var_w1 / 2.
    torch.manual_seed(1)
    a, b = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 4, 1)
    q0 = 18 * _var(a.weight) * 1.5 + _var(a.bias)
    q1 = 3 * _var(b.weight) * q0 / 2 + _var(b.bias)
    model = nn.Sequential(a, nn.ReLU(), b)
    return model, (2, 5, 5), {"input_second_moment": 1.5}, {"q": q1, "chi": 3 * _var(b.weight) / 2}, EXACT_REL


def _copy_case() -> Case:
    # contiguous() and float() change nothing: an identity "activation" between two dense layers.
    torch.manual_seed(2)
    a, b = nn.Linear(4, 6), nn.Linear(6, 2)
    q0 = 4 * _var(a.weight) + _var(a.bias)
    model = nn.Sequential(a, _Fn(lambda t: t.contiguous().float()), b)
    return model, (4,), {}, {"q": 6 * _var(b.weight) * q0 + _var(b.bias), "chi": 6 * _var(b.weight)}, EXACT_REL


def _reshape_case() -> Case:
    # Flatten ahead of the first layer and between the layers: entries move, moments with them.
    torch.manual_seed(3)
    a, b = nn.Conv2d(1, 2, 2), nn.Linear(8, 3)
    q0 = 4 * _var(a.weight) + _var(a.bias)
    model = nn.Sequential(nn.Unflatten(1, (1, 3, 3)), a, nn.ReLU(), nn.Flatten(), b)
    expected = {"q": 8 * _var(b.weight) * q0 / 2 + _var(b.bias), "chi": 8 * _var(b.weight) / 2}
    return model, (9,), {}, expected, EXACT_REL


def _dropout_case() -> Case:
    # E[(a m / (1-p))^2] = E[a^2] / (1-p) forward, and the same factor on E[g^2] backward.
    torch.manual_seed(4)
    a, b, p = nn.Linear(5, 7), nn.Linear(7, 2), 0.25
    q0 = 5 * _var(a.weight) + _var(a.bias)
    model = nn.Sequential(a, nn.ReLU(), nn.Dropout(p), b).train()
    expected = {"q": 7 * _var(b.weight) * (q0 / 2) / (1 - p) + _var(b.bias), "chi": 7 * _var(b.weight) / 2 / (1 - p)}
    return model, (5,), {}, expected, EXACT_REL


def _max_pool_case() -> Case:
    # A 2x2 max pool after ReLU passes relu(max of 4 entries ~ N(0, q0)) and routes the gradient
    # to it: chi = fan_in * var_w * P(max > 0) = 8 var_w (1 - 1/16); E[relu(max)^2] by Monte Carlo.
    torch.manual_seed(5)
    a, b = nn.Conv2d(1, 2, 1), nn.Linear(8, 3)
    q0 = _var(a.weight) + _var(a.bias)
    m = float((torch.relu(math.sqrt(q0) * _normal(MC_SAMPLES // 4, 4)) ** 2).mean())
    model = nn.Sequential(a, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), b)
    expected = {"q": 8 * _var(b.weight) * m + _var(b.bias), "chi": 8 * _var(b.weight) * 15 / 16}
    return model, (1, 4, 4), {}, expected, MC_REL


def _avg_pool_case() -> Case:
    # A 2x2 average of independent relu(h): E[p^2] = E[a]^2 + Var[a] / 4 with E[a] = sqrt(q/2pi),
    # E[a^2] = q/2; each entry gets g/4, so chi = 8 var_w * (1/2) * 4 * (1/16).
    torch.manual_seed(6)
    a, b = nn.Conv2d(1, 2, 1), nn.Linear(8, 3)
    q0 = _var(a.weight) + _var(a.bias)
    mean_sq, second = q0 / (2 * math.pi), q0 / 2
    pooled = mean_sq + (second - mean_sq) / 4
    model = nn.Sequential(a, nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), b)
    expected = {"q": 8 * _var(b.weight) * pooled + _var(b.bias), "chi": 8 * _var(b.weight) / 2 / 4}
    return model, (1, 4, 4), {}, expected, EXACT_REL


def _elementwise_case() -> Case:
    # phi(h) = 3 tanh(h) - 0.5: an activation followed by arithmetic with numbers. Monte Carlo of
    # E[phi(sqrt(q0) z)^2] and E[phi'(sqrt(q0) z)^2] = 9 E[(1 - tanh^2)^2].
    torch.manual_seed(7)
    a, b = nn.Linear(6, 5), nn.Linear(5, 3)
    q0 = 6 * _var(a.weight) * 2.0 + _var(a.bias)
    h = math.sqrt(q0) * _normal(MC_SAMPLES)
    m = float(((3 * torch.tanh(h) - 0.5) ** 2).mean())
    d = float((9 * (1 - torch.tanh(h) ** 2) ** 2).mean())
    model = nn.Sequential(a, _Fn(lambda t: torch.tanh(t) * 3.0 - 0.5), b)
    expected = {"q": 5 * _var(b.weight) * m + _var(b.bias), "chi": 5 * _var(b.weight) * d}
    return model, (6,), {"input_second_moment": 2.0}, expected, MC_REL


def _unknown_case() -> Case:
    # cumsum has no rule; with activation="relu" a shape-keeping unary op is taken as ReLU.
    torch.manual_seed(8)
    a, b = nn.Linear(4, 6), nn.Linear(6, 2)
    q0 = 4 * _var(a.weight) + _var(a.bias)
    model = nn.Sequential(a, _Fn(lambda t: torch.cumsum(t, -1)), b)
    expected = {"q": 6 * _var(b.weight) * q0 / 2 + _var(b.bias), "chi": 6 * _var(b.weight) / 2}
    return model, (4,), {"activation": "relu"}, expected, EXACT_REL


CASES: dict[Callable, Callable[[], Case]] = {
    rules.layer_op: _layer_case,
    rules.copy_op: _copy_case,
    rules.reshape_op: _reshape_case,
    rules.dropout_op: _dropout_case,
    rules.max_pool_op: _max_pool_case,
    rules.avg_pool_op: _avg_pool_case,
    rules.elementwise_op: _elementwise_case,
    rules.unknown_op: _unknown_case,
}


def test_every_rule_has_a_case():
    assert set(rules.RULES.values()) | {rules.unknown_op} == set(CASES)


@pytest.mark.parametrize("rule", list(CASES), ids=lambda r: r.__name__)
def test_rule_matches_its_formula(rule):
    model, size, kwargs, expected, rel = CASES[rule]()
    frame = predict_profile(model, size, **kwargs)
    assert len(frame) == 2
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    fan_in = first.weight[0].numel()
    q0 = fan_in * _var(first.weight) * kwargs.get("input_second_moment", 1.0) + _var(first.bias)
    assert frame["q"].iloc[0] == pytest.approx(q0, rel=EXACT_REL)
    for column, value in expected.items():
        assert frame[column].iloc[1] == pytest.approx(value, rel=rel), column


def test_an_op_without_a_rule_is_refused_in_one_line():
    net = nn.Sequential(nn.Linear(4, 6), _Fn(lambda t: torch.cumsum(t, -1)), nn.Linear(6, 2))
    with pytest.raises(GradlabError, match="'cumsum' in 1 between layers is not modelled.*pass activation="):
        predict_profile(net, (4,))
    ahead = nn.Sequential(_Fn(lambda t: torch.cumsum(t, -1)), nn.Linear(4, 2))
    with pytest.raises(GradlabError, match="'cumsum' in 0 runs before the first layer") as info:
        predict_profile(ahead, (4,))
    assert "\n" not in str(info.value)


def test_the_table_is_the_only_dispatch(monkeypatch):
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    predict_profile(net, (4,))  # relu has its rule ...
    monkeypatch.delitem(rules.RULES, "relu")
    with pytest.raises(GradlabError, match="'relu' in 1 between layers is not modelled"):
        predict_profile(net, (4,))  # ... and without its entry it is an unknown op
    monkeypatch.setitem(rules.RULES, "cumsum", rules.elementwise_op)
    cumsum = nn.Sequential(nn.Linear(4, 6), _Fn(lambda t: torch.cumsum(t, -1)), nn.Linear(6, 2))
    assert predict_profile(cumsum, (4,))["act"].iloc[0] == "cumsum(-1)"  # an entry is all it takes
