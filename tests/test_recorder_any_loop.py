"""The recorder in training code gradlab did not write: wrapped optimizers, closures,
checkpointing, outputs that are not one tensor, attention, torch.func, repeated step() calls.
Each test failed before the fix it covers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_recorder_support import hooks_left, rows_at
from torch import nn
from torch.utils.checkpoint import checkpoint

from gradlab.errors import GradlabError
from gradlab.recorder import GradientRecorder


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class _BrokenWrapper(torch.optim.Optimizer):
    """Like Accelerate's AcceleratedOptimizer: an Optimizer subclass that never ran
    Optimizer.__init__ and keeps the real one as .optimizer."""

    def __init__(self, optimizer):  # noqa: D107 - deliberately no super().__init__()
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        return self.optimizer.step(closure)


def test_a_wrapped_optimizer_is_unwrapped_and_records_its_steps():
    model = _mlp()
    wrapped = _BrokenWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    with GradientRecorder(model, optimizer=wrapped, metrics="all") as rec:
        for _ in range(2):
            wrapped.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            wrapped.step()
    assert sorted(set(rec.to_frame().step)) == [0, 1]
    assert hooks_left(model) == []


def test_a_failed_constructor_leaves_no_hook_behind():
    model = _mlp()

    class Refuses(torch.optim.SGD):
        def register_step_post_hook(self, hook):  # fails after the forward hooks are attached
            raise RuntimeError("no post hooks here")

    opt = Refuses(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="no post hooks"):
        GradientRecorder(model, optimizer=opt, metrics="all")
    assert hooks_left(model) == [] and not opt._optimizer_step_pre_hooks


def test_an_object_that_is_no_optimizer_is_refused_in_one_line():
    with pytest.raises(GradlabError, match="optimizer= must be a torch.optim.Optimizer"):
        GradientRecorder(_mlp(), optimizer=object())


@pytest.mark.parametrize("opt_name", ["sgd", "lbfgs"])
def test_step_with_a_closure_records_after_the_closure_backward(opt_name):
    model = _mlp()
    ref = copy.deepcopy(model)
    make = (lambda ps: torch.optim.SGD(ps, lr=0.1)) if opt_name == "sgd" else \
        (lambda ps: torch.optim.LBFGS(ps, lr=0.1, max_iter=3))
    opt, ref_opt = make(model.parameters()), make(ref.parameters())
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    with GradientRecorder(model, optimizer=opt) as rec:
        for x, y in batches:
            def closure(x=x, y=y):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss
            opt.step(closure)
    frame = rec.to_frame()
    steps = rec.step_frame()
    assert "skipped" not in set(steps.metric)  # no step taken for one the GradScaler skipped
    for s, (x, y) in enumerate(batches):
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()  # the gradient the step starts from
        want = float(torch.linalg.vector_norm(ref[0].weight.grad.double()).hypot(
            torch.linalg.vector_norm(ref[0].bias.grad.double())))
        assert rows_at(frame, s)[("0", "grad_norm")] == pytest.approx(want, rel=1e-6)

        def ref_closure(x=x, y=y):
            ref_opt.zero_grad()
            loss = nn.functional.cross_entropy(ref(x), y)
            loss.backward()
            return loss
        ref_opt.step(ref_closure)


def test_closure_with_accumulated_micro_batches_records_the_accumulated_gradient():
    # Lightning's automatic optimisation with accumulation: earlier micro-batches' backward run
    # outside, the last one inside the closure given to step().
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs, ys = torch.randn(3, 4, 4), torch.randint(0, 3, (3, 4))
    with GradientRecorder(model, optimizer=opt) as rec:
        opt.zero_grad()
        for k in range(2):
            nn.functional.cross_entropy(model(xs[k]), ys[k]).backward()

        def closure():
            loss = nn.functional.cross_entropy(model(xs[2]), ys[2])
            loss.backward()
            return loss
        total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model[0].parameters()]))
        opt.step(closure)
        accumulated = [p.grad.clone() for p in model[0].parameters()]
    got = rows_at(rec.to_frame(), 0)[("0", "grad_norm")]
    want = float(torch.linalg.vector_norm(torch.cat([g.flatten().double() for g in accumulated])))
    assert got == pytest.approx(want, rel=1e-6) and not math.isclose(got, float(total), rel_tol=1e-3)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.act = nn.Tanh()

    def forward(self, x):
        return self.act(self.fc(x))


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None):
        super().__init__()
        self.inp = nn.Linear(3, 6)
        self.block = _Block()
        self.out = nn.Linear(6, 2)
        self.reentrant = reentrant

    def forward(self, x):
        h = self.inp(x)
        if self.reentrant is None:
            h = self.block(h)
        else:
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        return self.out(h)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointed_layers_are_measured_once(reentrant):
    torch.manual_seed(1)
    model = _Checkpointed(reentrant)
    plain = copy.deepcopy(model)
    plain.reentrant = None
    x = torch.randn(5, 3)
    frames = []
    for m in (model, plain):
        with GradientRecorder(m, metrics="all") as rec:
            m(x).pow(2).sum().backward()
            rec.step()
        frames.append(rows_at(rec.to_frame(), 0))
    got, want = frames
    assert set(got) == set(want)  # every layer inside the block has its activation rows
    for key, w in want.items():
        assert got[key] == pytest.approx(w, rel=1e-5, abs=1e-7, nan_ok=True), key


class _DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return {"hidden": self.fc(x), "aux": self.fc(x) * 2}


class _TupleUser(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.dict_out = _DictOut()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        out, (h_n, c_n) = self.lstm(x)
        d = self.dict_out(out[:, -1, :4])
        return self.head(h_n[-1]) + d["aux"][:, :2].sum() * 0 + d["hidden"][:, :2]


def test_every_tensor_of_tuple_and_dict_outputs_is_measured():
    torch.manual_seed(2)
    model = _TupleUser()
    ref = copy.deepcopy(model)
    x = torch.randn(4, 6, 3)
    with GradientRecorder(model, metrics=["act_grad_norm", "act_mean"], layers=["lstm", "dict_out"]) as rec:
        model(x).pow(2).sum().backward()
        rec.step()
    got = rows_at(rec.to_frame(), 0)
    # reference: every tensor of each output, by retain_grad
    kept = {}

    def keep(name):
        def hook(mod, args, out):
            ts = [out[0], *out[1]] if name == "lstm" else list(out.values())
            for t in ts:
                t.retain_grad()
            kept[name] = ts
        return hook
    ref.lstm.register_forward_hook(keep("lstm"))
    ref.dict_out.register_forward_hook(keep("dict_out"))
    ref(x).pow(2).sum().backward()
    for name in ("lstm", "dict_out"):
        ts = kept[name]
        sq = sum(float(t.grad.double().pow(2).sum()) for t in ts if t.grad is not None)
        assert got[(name, "act_grad_norm")] == pytest.approx(math.sqrt(sq), rel=1e-6)
        n = sum(t.numel() for t in ts)
        mean = sum(float(t.detach().double().sum()) for t in ts) / n
        assert got[(name, "act_mean")] == pytest.approx(mean, rel=1e-6)


def test_attention_out_proj_is_measured_and_sits_inside_the_attention_in_depth():
    torch.manual_seed(3)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mlp = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            h = self.emb(x)
            a, _ = self.attn(h, h, h)
            return self.head(self.mlp(h + a)).mean(1)

    model = Tiny()
    x = torch.randn(2, 5, 4)
    with GradientRecorder(model, metrics=["grad_norm", "act_grad_norm", "act_std"]) as rec:
        model(x).sum().backward()
        rec.step()
    order = [r["name"] for r in rec.layer_table()]
    assert order == ["emb", "attn", "attn.out_proj", "mlp", "head"]
    got = rows_at(rec.to_frame(), 0)
    h = model.emb(x)
    a, _ = model.attn(h, h, h)
    assert got[("attn.out_proj", "act_std")] == pytest.approx(float(a.detach().double().std(correction=0)), rel=1e-6)
    assert ("attn.out_proj", "act_grad_norm") in got


def test_torch_func_transforms_in_the_step_do_not_break_recording():
    from torch.func import functional_call, grad, vmap

    model = _mlp()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of(p, xi):
        return functional_call(model, p, (xi[None],)).sum()

    with GradientRecorder(model, metrics="all") as rec:
        vmap(grad(loss_of), in_dims=(None, 0))(params, torch.randn(5, 4))  # per-example grads
        model(torch.randn(5, 4)).sum().backward()
        rec.step()
    frame = rec.to_frame()
    assert ("0", "act_mean") in rows_at(frame, 0)


def test_a_second_step_without_backward_is_refused():
    model = _mlp()
    with GradientRecorder(model) as rec:
        model(torch.randn(2, 4)).sum().backward()
        rec.step()
        with pytest.raises(GradlabError, match="without a backward"):
            rec.step()
        model(torch.randn(2, 4)).sum().backward()  # accumulating into the same .grad is a backward
        assert rec.step() is True
    assert sorted(set(rec.to_frame().step)) == [0, 1]
