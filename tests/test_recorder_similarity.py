"""Batch cosines (act_cos, act_grad_cos, act_grad_cos_class) against hand computations and the
full float64 pairwise cosine matrix; zero rows; labels."""

from __future__ import annotations

import math

import pytest
import torch
from test_recorder_support import pairwise_cosine, rows_at
from torch import nn

from gradlab.errors import GradlabError
from gradlab.recorder import GradientRecorder

COS = ["act_cos", "act_grad_cos", "act_grad_cos_class"]


def test_constant_output_gives_same_class_one_and_other_class_minus_one_ninth():
    # A constant network output: dL/dlogits = (softmax - onehot(y)) / B depends on the label
    # alone. Same label: identical rows, cosine 1. Different labels a, b, with u = 1/10 each:
    # <u - e_a, u - e_b> / |u - e_a|^2 = (0.1 - 0.2) / (0.1 - 0.2 + 1) = -1/9.
    torch.manual_seed(0)
    head = nn.Linear(5, 10)
    nn.init.zeros_(head.weight)
    nn.init.constant_(head.bias, 0.3)
    model = nn.Sequential(nn.Linear(3, 5), head)
    x = torch.randn(12, 3)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 9])
    with GradientRecorder(model, metrics=COS, layers=["1"]) as rec:
        rec.set_labels(y)
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
    got = rows_at(rec.to_frame(), 0)
    assert got[("1", "act_grad_cos_class")] == pytest.approx(1.0, abs=1e-6)
    counts = torch.bincount(y).tolist()
    same = sum(n * (n - 1) for n in counts)
    total = 12 * 11
    want_all = (same * 1.0 + (total - same) * (-1.0 / 9.0)) / total
    assert got[("1", "act_grad_cos")] == pytest.approx(want_all, abs=1e-6)
    assert got[("1", "act_cos")] == pytest.approx(1.0, abs=1e-6)  # every input, the same output


def test_values_match_the_float64_cosine_matrix_for_conv_tanh_and_linear_outputs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv1d(4, 6, 3), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 5, 7))
    x = torch.randn(9, 4, 7)
    y = torch.tensor([1, 1, 2, 2, 2, 0, 5, 5, 6])
    with GradientRecorder(model, metrics=COS) as rec:
        rec.set_labels(y)
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
    got = rows_at(rec.to_frame(), 0)
    # the reference: the same forward, outputs kept, dL/dh by retain_grad
    outs = {}
    h = x
    for i, m in enumerate(model):
        h = m(h)
        h.retain_grad()
        outs[str(i)] = h
    nn.functional.cross_entropy(h, y).backward()
    for name in ("0", "1", "3"):  # Flatten is not a default layer
        out = outs[name]
        assert got[(name, "act_cos")] == pytest.approx(pairwise_cosine([out.detach().double()]), abs=1e-6)
        assert got[(name, "act_grad_cos")] == pytest.approx(pairwise_cosine([out.grad.double()]), abs=1e-6)
        assert got[(name, "act_grad_cos_class")] == pytest.approx(
            pairwise_cosine([out.grad.double()], y), abs=1e-6)


def test_zero_rows_are_left_out_and_too_few_rows_give_nan():
    # Examples whose input is 0 pass a bias-free linear map as 0 rows, and a loss that ignores
    # some examples gives them exactly-zero gradient rows: both are left out of the pairs.
    torch.manual_seed(2)
    lin = nn.Linear(4, 6, bias=False)
    model = nn.Sequential(lin, nn.Linear(6, 3))
    x = torch.randn(6, 4)
    x[[1, 4]] = 0.0
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])  # examples 2 and 5 do not count
    y = torch.tensor([0, 0, 1, 0, 1, 1])
    with GradientRecorder(model, metrics=COS, layers=["0"]) as rec:
        rec.set_labels(y)
        out = model(x)
        (nn.functional.cross_entropy(out, y, reduction="none") * weight).sum().backward()
        rec.step()
    got = rows_at(rec.to_frame(), 0)
    h = lin(x)
    h.retain_grad()
    (nn.functional.cross_entropy(model[1](h), y, reduction="none") * weight).sum().backward()
    keep_f = [0, 2, 3, 5]
    assert got[("0", "act_cos")] == pytest.approx(pairwise_cosine([h.detach()[keep_f].double()]), abs=1e-6)
    # a zero output row still gets dL/dh; only the ignored examples 2 and 5 have zero gradient rows
    keep_g = [0, 1, 3, 4]
    assert (h.grad[[2, 5]] == 0).all() and (h.grad[keep_g].norm(dim=1) > 0).all()  # the premise
    assert got[("0", "act_grad_cos")] == pytest.approx(pairwise_cosine([h.grad[keep_g].double()]), abs=1e-6)
    assert not math.isnan(got[("0", "act_grad_cos")])
    # same-label pairs among the non-zero gradient rows 0, 1, 3 (label 0) and 4 (label 1, alone)
    assert got[("0", "act_grad_cos_class")] == pytest.approx(
        pairwise_cosine([h.grad[[0, 1, 3]].double()]), abs=1e-6)

    # one non-zero row only: no pair, NaN (not 0, not a rounding residue divided by 0)
    x2 = torch.zeros(5, 4)
    x2[0] = 1.0
    with GradientRecorder(model, metrics=["act_cos"], layers=["0"]) as rec2:
        model(x2).sum().backward()
        rec2.step()
    assert math.isnan(rows_at(rec2.to_frame(), 0)[("0", "act_cos")])


def test_same_class_cosine_is_nan_without_labels_or_without_a_shared_label():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3))
    x = torch.randn(3, 3)
    with GradientRecorder(model, metrics=COS) as rec:
        model(x).sum().backward()  # no labels
        rec.step()
        rec.set_labels(torch.tensor([0, 1, 2]))  # no label shared by two examples
        model(x).sum().backward()
        rec.step()
        model(x).sum().backward()  # labels hold for one step only
        rec.step()
    frame = rec.to_frame()
    for s in range(3):
        got = rows_at(frame, s)
        assert math.isnan(got[("1", "act_grad_cos_class")]) and math.isfinite(got[("1", "act_grad_cos")])


@pytest.mark.parametrize("bad", [torch.tensor([0.0, 1.0]), torch.zeros(2, 2, dtype=torch.long), [0, 1]])
def test_set_labels_refuses_what_is_not_one_integer_label_per_example(bad):
    with GradientRecorder(nn.Linear(2, 2), metrics=COS) as rec:
        with pytest.raises(GradlabError, match="1-d integer tensor"):
            rec.set_labels(bad)
