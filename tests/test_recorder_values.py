"""Recorded values against independent references: MLP, CNN with BatchNorm, torchvision resnet18
(in-place ReLU), shared, frozen and unused parameters, update ratios, underflow, non-finite."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from test_recorder_support import (
    ALL_LAYER,
    ActCapture,
    assert_matches,
    default_layer_names,
    expected_step,
    param_reference,
    rows_at,
    total_reference,
)
from torch import nn

from gradlab.recorder import GradientRecorder


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 12), nn.Sigmoid(),
        nn.Linear(12, 3),
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )


def _check_one_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 1) -> None:
    """Train `steps` steps with the recorder and, in lockstep, a reference copy; compare each."""
    ref = copy.deepcopy(model)
    names = default_layer_names(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    prev = None
    run_dead: dict = {}
    with GradientRecorder(model, metrics="all") as rec:
        for s in range(steps):
            opt.zero_grad()
            rec.set_labels(y)
            nn.functional.cross_entropy(model(x), y).backward()
            assert rec.step()
            opt.step()

            cap = ActCapture(ref, names, labels=y)
            ref_opt.zero_grad()
            nn.functional.cross_entropy(ref(x), y).backward()
            cap.remove()
            want = expected_step(ref, cap, names, ALL_LAYER, run_dead=run_dead)
            modules = dict(ref.named_modules())
            current = {n: [p.detach().clone() for p in modules[n].parameters(recurse=False)] for n in names}
            if prev is not None:
                for n, ps in current.items():
                    if ps:
                        delta = math.sqrt(sum(float(torch.linalg.vector_norm(a - b, dtype=torch.float64)) ** 2
                                              for a, b in zip(ps, prev[n])))
                        want[(n, "update_ratio")] = delta / want[(n, "weight_norm")]
            prev = current
            assert_matches(rows_at(rec.to_frame(), s), want, what=f"step {s}")
            steps_frame = rec.step_frame()
            total = steps_frame[(steps_frame.step == s) & (steps_frame.metric == "total_grad_norm")]["value"]
            assert total.tolist() == pytest.approx([total_reference(ref)], rel=1e-6)
            ref_opt.step()
    table = rec.layer_table()
    assert [r["name"] for r in table] == names  # these nets run their modules in registration order
    assert [r["depth"] for r in table] == list(range(len(names)))


def test_mlp_matches_references_over_three_steps():
    torch.manual_seed(0)
    _check_one_step(_mlp(), torch.randn(10, 6), torch.randint(0, 3, (10,)), steps=3)


def test_cnn_with_batchnorm_matches_references():
    torch.manual_seed(1)
    _check_one_step(_cnn(), torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,)), steps=2)


def test_resnet18_with_inplace_relu_matches_references():
    torch.manual_seed(2)
    model = torchvision.models.resnet18(num_classes=4)
    assert model.relu.inplace
    _check_one_step(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))


def test_layer_table_follows_forward_order_not_registration_order():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(4, 2)
            self.early = nn.Linear(3, 4)

        def forward(self, x):
            return self.late(torch.relu(self.early(x)))

    model = Reversed()
    rec = GradientRecorder(model)
    model(torch.randn(2, 3)).sum().backward()
    rec.step()
    assert [(r["name"], r["depth"], r["type"], r["num_params"]) for r in rec.layer_table()] == [
        ("early", 0, "Linear", 16), ("late", 1, "Linear", 10)
    ]
    frame = rec.to_frame()
    assert dict(zip(frame.layer, frame.depth)) == {"early": 0, "late": 1}
    rec.remove()


def test_shared_parameters_count_in_each_owner_and_once_in_the_total():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(5, 5)
            self.dec = nn.Linear(5, 5)
            self.dec.weight = self.enc.weight  # tied weights: one Parameter, two modules
            self.act = nn.ReLU()

        def forward(self, x):
            h = self.act(self.enc(x))
            return self.dec(self.act(self.enc(h)))  # enc and act run twice

    torch.manual_seed(3)
    model = Tied()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 5)
    with GradientRecorder(model, metrics="all") as rec:
        model(x).pow(2).sum().backward()
        rec.step()
    names = ["enc", "dec", "act"]
    cap = ActCapture(ref, names)
    ref(x).pow(2).sum().backward()
    cap.remove()
    assert len(cap.values["enc"]) == 2 and len(cap.values["act"]) == 2
    want = expected_step(ref, cap, names, ALL_LAYER)
    assert_matches(rows_at(rec.to_frame(), 0), want)
    total = rec.step_frame().query("metric == 'total_grad_norm'")["value"].item()
    assert total == pytest.approx(total_reference(ref), rel=1e-6)
    # the tied weight's gradient is in both owners' norms, but only once in the total
    enc_b, dec_b, w = ref.enc.bias.grad, ref.dec.bias.grad, ref.enc.weight.grad
    once = math.sqrt(sum(float(t.norm()) ** 2 for t in (enc_b, dec_b, w)))
    assert total == pytest.approx(once, rel=1e-6)


def test_frozen_parameters_have_weight_norm_but_no_gradient_rows():
    torch.manual_seed(4)
    model = _mlp()
    for p in model[2].parameters():
        p.requires_grad_(False)
    model[4].bias.requires_grad_(False)
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    names = default_layer_names(model)
    with GradientRecorder(model, metrics="all") as rec:
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
    cap = ActCapture(ref, names)
    nn.functional.cross_entropy(ref(x), y).backward()
    cap.remove()
    got = rows_at(rec.to_frame(), 0)
    assert ("2", "grad_norm") not in got and ("2", "weight_norm") in got
    assert got[("4", "grad_norm")] == pytest.approx(float(ref[4].weight.grad.norm()), rel=1e-6)
    assert_matches(got, expected_step(ref, cap, names, ALL_LAYER))


def test_parameters_without_gradient_in_a_step_get_no_gradient_rows():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 3)
            self.head = nn.Linear(3, 1)

        def forward(self, x, use_b):
            h = self.a(x)
            if use_b:
                h = self.b(h)
            return self.head(h)

    torch.manual_seed(5)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)
    with GradientRecorder(model) as rec:
        for s, use_b in enumerate([True, False, True]):
            opt.zero_grad(set_to_none=True)
            model(x, use_b).sum().backward()
            want = {k: v for k, v in param_reference(model, ["a", "b", "head"]).items()}
            rec.step()
            got = rows_at(rec.to_frame(), s)
            assert_matches(got, want, what=f"step {s}")
            assert (("b", "grad_norm") in got) == use_b
            opt.step()


def test_deep_plain_net_records_exact_zero_gradients():
    torch.manual_seed(0)
    blocks = []
    for _ in range(56):
        blocks += [nn.Linear(16, 16), nn.ReLU()]
    model = nn.Sequential(*blocks, nn.Linear(16, 10))
    x, y = torch.randn(8, 16), torch.randint(0, 10, (8,))
    with GradientRecorder(model, metrics=["grad_norm", "act_grad_norm", "grad_nonfinite"]) as rec:
        nn.functional.cross_entropy(model(x), y).backward()
        rec.step()
    frame = rec.to_frame()
    first = frame[(frame.layer == "0") & (frame.metric == "grad_norm")]["value"]
    assert torch.linalg.vector_norm(model[0].weight.grad).item() == 0.0  # the premise
    assert first.tolist() == [0.0]
    # every layer is present; the zeros are rows, not gaps, and never NaN
    gn = frame[frame.metric == "grad_norm"]
    assert len(gn) == 57 and gn["value"].notna().all()
    assert (gn["value"] == 0.0).sum() >= 2
    want = param_reference(model, [str(i) for i in range(0, 113, 2)])
    got = rows_at(frame, 0)
    checked = 0
    for (layer, metric), v in want.items():
        # below ~1e-19 the float32 squares are subnormal: only exact zeros and normal values compare
        if metric == "grad_norm" and (v == 0.0 or v > 1e-15):
            assert got[(layer, metric)] == pytest.approx(v, rel=1e-6, abs=0.0)
            checked += 1
    assert checked > 30


def test_nonfinite_gradients_are_counted_and_first_location_kept():
    torch.manual_seed(6)
    model = _mlp()
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    with GradientRecorder(model, metrics="all") as rec:
        for s in range(3):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if s == 1:
                model[2].weight.grad[0, :3] = float("nan")
                model[0].weight.grad[1] = float("inf")
                model[0].bias.grad[0] = -float("inf")
            if s == 2:
                model[6].bias.grad[0] = float("nan")
            rec.step()  # never raises
        assert rec.nonfinite_first == {"step": 1, "layer": "2", "metric": "grad_norm"}  # deepest bad layer
    frame = rec.to_frame()
    got = rows_at(frame, 1)
    assert got[("0", "grad_nonfinite")] == 7.0  # a row of 6 weights and one bias
    assert got[("2", "grad_nonfinite")] == 3.0
    assert got[("4", "grad_nonfinite")] == 0.0
    assert math.isnan(got[("2", "grad_norm")]) and math.isinf(got[("0", "grad_norm")])
    assert rows_at(frame, 2)[("6", "grad_nonfinite")] == 1.0
    total = rec.step_frame().set_index("step")["value"]
    assert math.isnan(total[1]) and math.isfinite(total[0])


def test_selected_layers_cover_all_parameters_beneath_them():
    torch.manual_seed(7)
    model = torchvision.models.resnet18(num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    ref = copy.deepcopy(model)
    with GradientRecorder(model, layers=["layer1.0", "layer2"], metrics="all") as rec:
        model(x).sum().backward()
        rec.step()
    cap = ActCapture(ref, ["layer1.0", "layer2"])
    ref(x).sum().backward()
    cap.remove()
    want = param_reference(ref, ["layer1.0", "layer2"], own=False, nonfinite=True)
    want.update(cap.stats({}))
    want.update({(n, "act_grad_norm"): v for n, v in cap.grad_norms().items()})
    want.update(cap.grad_cosines())
    assert_matches(rows_at(rec.to_frame(), 0), want)
    assert [r["name"] for r in rec.layer_table()] == ["layer1.0", "layer2"]


def test_layer_selection_by_type_and_predicate():
    model = _cnn()
    by_type = GradientRecorder(model, layers=nn.Conv2d)
    assert [layer.name for layer in by_type.layers] == ["0", "3"]
    by_tuple = GradientRecorder(model, layers=(nn.Conv2d, nn.Linear))
    assert [layer.name for layer in by_tuple.layers] == ["0", "3", "8"]
    by_pred = GradientRecorder(model, layers=lambda name, m: isinstance(m, nn.BatchNorm2d))
    assert [layer.name for layer in by_pred.layers] == ["1", "4"]
    for r in (by_type, by_tuple, by_pred):
        r.remove()


def test_sparse_embedding_gradient_norm():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(12, 2))
    idx = torch.tensor([[1, 2, 1], [7, 1, 0]])  # repeated rows: the sparse gradient has duplicates
    with GradientRecorder(model, metrics=["grad_norm", "grad_nonfinite"]) as rec:
        model(idx).sum().backward()
        assert model[0].weight.grad.is_sparse  # the premise
        rec.step()
    dense = model[0].weight.grad.to_dense()
    got = rows_at(rec.to_frame(), 0)
    assert got[("0", "grad_norm")] == pytest.approx(float(torch.linalg.vector_norm(dense, dtype=torch.float64)),
                                                    rel=1e-6)
    assert got[("0", "grad_nonfinite")] == 0.0


def test_default_metrics_find_the_first_nonfinite_step_without_the_count():
    torch.manual_seed(6)
    model = _mlp()
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    with GradientRecorder(model) as rec:
        for s in range(3):
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if s == 2:
                model[0].weight.grad[1, 2] = float("nan")
                model[4].weight.grad[0, 0] = float("inf")
            rec.step()
        assert rec.nonfinite_first == {"step": 2, "layer": "4", "metric": "grad_norm"}
    assert "grad_nonfinite" not in set(rec.to_frame().metric)


def test_nonfinite_count_is_exact_where_finite_gradients_overflow_their_squares():
    # finite values of 1e30 square to inf in float32: the sum of squares alone would call them
    # non-finite; the count must still say 0 for them and count the real NaN/inf exactly.
    from gradlab.recorder.reduce import chunks_of, nonfinite_counts, sumsq_vector

    huge = torch.full((5,), 1e30)
    mixed = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 2.0])
    fine = torch.randn(1000)
    tensors = [fine, huge, mixed, fine.clone()]
    sq = sumsq_vector(tensors)
    assert not torch.isfinite(sq[1])  # the premise
    want = [float((~torch.isfinite(t)).sum()) for t in tensors]
    assert nonfinite_counts(tensors, chunks_of(tensors), sumsq=sq).tolist() == want == [0, 0, 3, 0]
    assert nonfinite_counts(tensors, chunks_of(tensors)).tolist() == want
