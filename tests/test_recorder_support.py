"""Independent references for the recorder tests (imported by the test_recorder_* files).

Parameter metrics come from ``torch.linalg.vector_norm(p.grad, dtype=torch.float64)`` (exact
to float64, so float32 accumulation error in the recorder shows); dL/dh from ``retain_grad()``
on each layer's output, in a copy of the model whose layer outputs are cloned before anything
downstream can modify them in place; activation statistics from those outputs in float64.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

ACT_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def default_layer_names(model: nn.Module) -> list[str]:
    """Modules that own parameters, plus activation and normalisation modules."""
    return [
        n for n, m in model.named_modules()
        if n and (next(m.parameters(recurse=False), None) is not None
                  or isinstance(m, ACT_TYPES + NORM_TYPES))
    ]


class ActCapture:
    """Forward hooks that keep every output of the named modules and retain its gradient."""

    def __init__(self, model: nn.Module, names: Iterable[str], labels: torch.Tensor | None = None) -> None:
        self.labels = labels
        self.outputs: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str) -> Callable:
        def hook(module, args, out):
            if not torch.is_grad_enabled():
                return None
            self.values[name].append(out.detach().double().clone())
            if out.requires_grad:
                out.retain_grad()
                self.outputs[name].append(out)
                return out.clone()  # in-place ops downstream now modify the clone, not `out`
            return None

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def grad_cosines(self) -> dict[tuple[str, str], float]:
        res = {}
        for name, outs in self.outputs.items():
            grads = [o.grad.double() for o in outs if o.grad is not None]
            if grads:
                cos = pairwise_cosine(grads)
                if cos is not None:
                    res[(name, "act_grad_cos")] = cos
                    res[(name, "act_grad_cos_class")] = (
                        math.nan if self.labels is None else pairwise_cosine(grads, self.labels))
        return res

    def grad_norms(self) -> dict[str, float]:
        out = {}
        for name, outs in self.outputs.items():
            grads = [o.grad for o in outs if o.grad is not None]
            if grads:
                out[name] = math.sqrt(sum(float(torch.linalg.vector_norm(g.double())) ** 2 for g in grads))
        return out

    def stats(self, kinds: dict[str, str | None], threshold: float = 0.01) -> dict[tuple[str, str], float]:
        res = {}
        for name, vals in self.values.items():
            x = torch.cat([v.reshape(-1) for v in vals])
            res[(name, "act_mean")] = float(x.mean())
            res[(name, "act_std")] = float(x.std(correction=0))
            kind = kinds.get(name)
            cos = pairwise_cosine(vals)
            if cos is not None:
                res[(name, "act_cos")] = cos
            if kind == "relu":
                res[(name, "act_zero_frac")] = float((x == 0).double().mean())
                alive = None
                for v in vals:  # a unit is dead when it is 0 in every call of the step
                    a = (v.abs().amax(dim=[d for d in range(v.dim()) if d != 1]) != 0)
                    alive = a if alive is None else alive | a
                res[(name, "act_dead_units")] = float((~alive).double().mean())
                res[(name, "dead_mask")] = ~alive
            elif kind == "sigmoid":
                res[(name, "act_saturated_frac")] = float((x * (1 - x) < threshold * 0.25).double().mean())
            elif kind == "tanh":
                res[(name, "act_saturated_frac")] = float((1 - x * x < threshold).double().mean())
        return res


def pairwise_cosine(calls: list[torch.Tensor], labels: torch.Tensor | None = None) -> float | None:
    """Mean cosine over pairs of distinct non-zero example rows within each call, from the full
    float64 B x B cosine matrix; ``labels``: same-label pairs only. None for 0-d outputs."""
    total, pairs = 0.0, 0
    for v in calls:
        if v.dim() < 1:
            return None
        rows = v.double().reshape(v.shape[0], -1)
        norms = rows.norm(dim=1)
        keep = norms != 0
        unit = rows[keep] / norms[keep, None]
        cos = unit @ unit.T
        off = ~torch.eye(len(unit), dtype=torch.bool)
        if labels is not None:
            lab = labels[keep]
            off &= lab[:, None] == lab[None, :]
        total += float(cos[off].sum())
        pairs += int(off.sum())
    return total / pairs if pairs else math.nan


def kind_of(module: nn.Module) -> str | None:
    if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    return None


def _norm64(tensors) -> float:
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2
                         for t in tensors))


def param_reference(model: nn.Module, names: Iterable[str], *, own: bool = True,
                    nonfinite: bool = False) -> dict:
    """grad_norm, weight_norm (and grad_nonfinite with ``nonfinite``) of each named module,
    from vector_norm(p.grad) in float64."""
    modules = dict(model.named_modules())
    res = {}
    for n in names:
        params = list(modules[n].parameters(recurse=not own))
        if not params:
            continue
        res[(n, "weight_norm")] = _norm64(params)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            res[(n, "grad_norm")] = _norm64(grads)
            if nonfinite:
                res[(n, "grad_nonfinite")] = float(sum(int((~torch.isfinite(g)).sum()) for g in grads))
    return res


def total_reference(model: nn.Module) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return _norm64(grads)


def rows_at(frame: pd.DataFrame, step: int) -> dict[tuple[str, str], float]:
    sub = frame[frame["step"] == step]
    keys = list(zip(sub["layer"], sub["metric"]))
    assert len(keys) == len(set(keys)), "duplicate (layer, metric) rows in one step"
    return dict(zip(keys, sub["value"]))


def assert_matches(got: dict, want: dict, rtol: float = 1e-6, what: str = "") -> None:
    """Same keys, and every value within rtol (act_mean: relative to the layer's std)."""
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"{what} missing rows {missing[:6]}, unexpected rows {extra[:6]}"
    for key, w in want.items():
        g = got[key]
        if math.isnan(w):
            assert math.isnan(g), f"{what} {key}: got {g}, want NaN"
            continue
        scale = abs(w)
        if key[1] == "act_mean":
            scale = max(scale, want.get((key[0], "act_std"), 0.0))
        if "cos" in key[1]:  # a cosine near 0 is compared on its own scale, 1
            scale = max(scale, 1.0)
        assert abs(g - w) <= rtol * scale + 1e-30, f"{what} {key}: got {g!r}, want {w!r}"


def expected_step(model_ref: nn.Module, cap: ActCapture, names: list[str], metrics: Iterable[str],
                  threshold: float = 0.01, run_dead: dict | None = None) -> dict[tuple[str, str], float]:
    """All expected (layer, metric) values of one step, restricted to ``metrics``.

    ``run_dead``: per layer, the units dead at every step so far (updated here), for
    act_dead_units_run; pass the same dict at each step."""
    modules = dict(model_ref.named_modules())
    want = param_reference(model_ref, names, nonfinite=True)
    want.update(cap.stats({n: kind_of(modules[n]) for n in names}, threshold))
    run_dead = {} if run_dead is None else run_dead
    for key in [k for k in want if k[1] == "dead_mask"]:
        mask = want.pop(key)
        before = run_dead.get(key[0])
        run_dead[key[0]] = mask if before is None else before & mask
        want[(key[0], "act_dead_units_run")] = float(run_dead[key[0]].double().mean())
    want.update(cap.grad_cosines())
    for n, v in cap.grad_norms().items():
        want[(n, "act_grad_norm")] = v
    metrics = set(metrics)
    return {k: v for k, v in want.items() if k[1] in metrics}


ALL_LAYER = ["grad_norm", "weight_norm", "act_grad_norm", "act_mean", "act_std", "act_zero_frac",
             "act_dead_units", "act_dead_units_run", "act_saturated_frac", "act_cos", "act_grad_cos",
             "act_grad_cos_class", "grad_nonfinite"]


def hooks_left(model: nn.Module) -> list[str]:
    """Names of modules and parameters that still carry any hook."""
    left = []
    for n, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            if getattr(m, attr, None):
                left.append(f"{n or '<root>'}.{attr}")
    for n, p in model.named_parameters():
        if getattr(p, "_post_accumulate_grad_hooks", None) or getattr(p, "_backward_hooks", None):
            left.append(f"{n}.hooks")
    return left


def np_allclose_frames(a: pd.DataFrame, b: pd.DataFrame, rtol: float) -> None:
    """Two layer frames with the same rows and values within rtol (NaN equal to NaN)."""
    key = ["step", "layer", "metric"]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    assert list(a[key].itertuples(index=False)) == list(b[key].itertuples(index=False))
    assert list(a["depth"]) == list(b["depth"])
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    scale = np.maximum(np.abs(vb), 1e-30)
    # act_mean of a normalised output sits at ~0: compare it on the scale of the layer's std
    stds = b[b["metric"] == "act_std"].set_index(["step", "layer"])["value"]
    is_mean = (b["metric"] == "act_mean").to_numpy()
    if is_mean.any():
        idx = list(zip(b.loc[is_mean, "step"], b.loc[is_mean, "layer"]))
        scale[is_mean] = np.maximum(scale[is_mean], stds.reindex(idx).fillna(0).to_numpy())
    bad = ~((np.abs(va - vb) <= rtol * scale) | (np.isnan(va) & np.isnan(vb)))
    assert not bad.any(), f"mismatch:\n{a[bad].head()}\n{b[bad].head()}"
