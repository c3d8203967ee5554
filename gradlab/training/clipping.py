"""Gradient clipping methods that report what they did, without host synchronisation.

``parse_clip(spec)`` turns a spec string into a :class:`Clipper`:

============================  =================================================================
``none``                      no clipping; the global norm is still measured
``norm:T``                    global norm clipping over all parameters together (as
                              ``torch.nn.utils.clip_grad_norm_``): if ||g|| > T, g <- g*T/||g||
``value:T``                   clamp every gradient element to [-T, T]
``agc:L[,eps=E]``             adaptive gradient clipping, unit-wise (Brock et al. 2021), L=0.01,
                              E=1e-3 by default
``autoclip:P[,window=N]``     global norm clipping at the P-th percentile of the norm history
                              (Seetharaman et al. 2020); P=10 by default
``zscore:Z[,alpha=A,warmup=N]``  spike clipping on the z-score of the norm against an EMA of
                              its mean and variance (as ZClip); Z=2.5, A=0.97, N=25 by default
============================  =================================================================

Call ``clipper.prepare(model)`` once, then ``clipper.clip(parameters)`` after each backward
pass. ``clip`` modifies ``.grad`` in place and returns a :class:`ClipResult` of 0-dim tensors
on the gradients' device: nothing in it calls ``.item()`` or branches on a tensor value, so a
CUDA training step keeps running ahead of the host.

Choices worth knowing:

- **Norms** (``norm_before``, ``norm_after``) are global L2 norms over all gradients, computed
  in float32 whatever the gradients' dtype (float64 if some gradients are float64).
- **fired** is 1.0 when the clipper changed the gradient: for the norm-based methods when the
  norm exceeds the threshold, for ``value`` when any element exceeds it, for ``agc`` when any
  unit was rescaled.
- **threshold** is in the method's own units: a global norm for ``norm``, ``autoclip`` and
  ``zscore`` (:attr:`Clipper.threshold_is_norm` is True), an element bound for ``value``, the
  ratio lambda for ``agc``, and +inf for ``none`` and during z-score warm-up.
- **Non-finite gradients.** ``norm_before`` is then nan or inf and ``fired`` is 0. The
  norm-based methods and AGC leave such gradients untouched (the trainer decides whether to skip
  the step); ``value`` still clamps, which maps +-inf to +-T and keeps nan. AutoClip and the
  z-score statistics ignore non-finite norms.
- **AGC.** Each output unit of a weight (a row of a linear weight, an output channel of a
  convolution kernel) is clipped when ||G_unit|| / max(||W_unit||, eps) > lambda, to the norm
  lambda * max(||W_unit||, eps). Biases, norm-layer gains and other 1-d parameters count as one
  unit each (whole-tensor norms), as in the NFNet reference implementation. The parameters of
  the model's final ``nn.Linear`` (the last one registered) are left unclipped; ``prepare``
  finds it. Without ``prepare``, nothing is excluded.
- **AutoClip.** The history includes the current step's norm (as in the original code), so
  the threshold at step t is the P-th percentile (linear interpolation, numpy's default) of
  the norms of steps 0..t; at step 0 it is that step's own norm. The history lives in a device
  buffer that doubles when full (the host knows its length), or in a ring of the last N norms
  with ``window=N``.
- **z-score.** For the first ``warmup`` steps nothing is clipped and the norms are collected;
  then the mean and variance are set from them. After that, with mean m and standard deviation
  s from the previous steps, z = (||g|| - m) / s; if z > Z the gradient is scaled to the norm
  m + Z*s. The EMA is then updated with the norm after clipping (so one spike does not inflate
  the statistics that judge the next): m <- A*m + (1-A)*n, v <- A*v + (1-A)*(n - m)^2 with
  the updated m.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import Tensor, nn

from gradlab.errors import GradlabError

VALID_FORMS = (
    "none, norm:T, value:T, agc:LAMBDA[,eps=E], autoclip:PERCENTILE[,window=N], "
    "zscore:Z[,alpha=A,warmup=N]"
)

_EPS = 1e-6  # added to the norm before dividing, as torch.nn.utils.clip_grad_norm_ does


@dataclass
class ClipResult:
    """What one ``clip`` call did; every field is a 0-dim float tensor on the gradients' device."""

    threshold: Tensor  # in the method's units (see the module docs); +inf when not clipping
    fired: Tensor  # 1.0 when the gradient was changed, else 0.0
    norm_before: Tensor  # global L2 norm of all gradients before clipping (nan/inf if non-finite)
    norm_after: Tensor  # global L2 norm after clipping


# -- helpers shared by the methods --------------------------------------------------------------


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _groups(tensors: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    """Foreach kernels need one device and dtype per call."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of all tensors together, on the first tensor's device.

    Computed in float32 (float64 when a tensor is float64) whatever the tensors' dtype.
    """
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    device = tensors[0].device
    norms: list[Tensor] = []
    for (dev, dtype), group in _groups(tensors).items():
        # at least float32, so half-precision gradients do not overflow or round the norm
        part = torch._foreach_norm(group, 2, dtype=torch.promote_types(dtype, torch.float32))
        norms.extend(n.to(device) if dev != device else n for n in part)
    widest = functools.reduce(torch.promote_types, (n.dtype for n in norms))
    return torch.linalg.vector_norm(torch.stack([n.to(widest) for n in norms]))


def _scale_all(tensors: list[Tensor], factor: Tensor) -> None:
    """Multiply every tensor in place by a 0-dim factor (kept on device: no sync)."""
    for (dev, dtype), group in _groups(tensors).items():
        torch._foreach_mul_(group, factor.to(device=dev, dtype=dtype))


def _num(value: float) -> str:
    """A number as written in a spec: short, but without losing digits (1.0 -> "1")."""
    return format(value, ".12g")


def _scalar(value: float, like: Tensor) -> Tensor:
    # torch.full launches a fill on the device instead of copying a host value over.
    return torch.full((), value, dtype=like.dtype, device=like.device)


class Clipper:
    """Base class: measures the global norm and clips nothing (the ``none`` method)."""

    name: str = "none"
    threshold_is_norm: bool = False  # True when ``threshold`` is a global-norm threshold

    def prepare(self, model: nn.Module) -> None:
        """Look at the model once before training (AGC finds its final linear layer)."""

    def clip(self, parameters: Tensor | Iterable[Tensor]) -> ClipResult:
        """Clip the gradients of ``parameters`` in place and report what happened."""
        grads = _grads(parameters)
        norm = global_norm(grads)
        inf = _scalar(math.inf, norm)
        return ClipResult(threshold=inf, fired=torch.zeros_like(norm), norm_before=norm, norm_after=norm)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _ScaleToThreshold(Clipper):
    """Norm-based methods: scale all gradients together so that the norm is at most a threshold."""

    threshold_is_norm = True

    def clip(self, parameters: Tensor | Iterable[Tensor]) -> ClipResult:
        grads = _grads(parameters)
        norm = global_norm(grads)
        threshold = self._threshold(norm)
        finite = torch.isfinite(norm)
        # the formula of torch.nn.utils.clip_grad_norm_, applied only to finite norms
        coef = torch.where(finite, (threshold / (norm + _EPS)).clamp(max=1.0), torch.ones_like(norm))
        _scale_all(grads, coef)
        fired = (finite & (norm > threshold)).to(norm.dtype)
        self._observe(torch.where(finite, norm * coef, norm))
        return ClipResult(threshold=threshold, fired=fired, norm_before=norm, norm_after=norm * coef)

    def _threshold(self, norm: Tensor) -> Tensor:
        raise NotImplementedError

    def _observe(self, norm_after: Tensor) -> None:
        """Stateful methods update their statistics here."""


class NormClipper(_ScaleToThreshold):
    """Global norm clipping at a fixed threshold (Pascanu et al. 2013)."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm
        self.name = f"norm:{_num(max_norm)}"

    def _threshold(self, norm: Tensor) -> Tensor:
        return _scalar(self.max_norm, norm)


class ValueClipper(Clipper):
    """Clamp every gradient element to [-T, T] (changes the gradient's direction)."""

    def __init__(self, bound: float):
        self.bound = bound
        self.name = f"value:{_num(bound)}"

    def clip(self, parameters: Tensor | Iterable[Tensor]) -> ClipResult:
        grads = _grads(parameters)
        norm = global_norm(grads)
        if not grads:
            return ClipResult(_scalar(self.bound, norm), torch.zeros_like(norm), norm, norm)
        largest = torch.zeros_like(norm)
        for _key, group in _groups(grads).items():
            peaks = torch._foreach_norm(group, math.inf)  # max |element| per tensor
            largest = torch.maximum(largest, torch.stack(peaks).max().to(norm.device, norm.dtype))
            torch._foreach_clamp_min_(group, -self.bound)
            torch._foreach_clamp_max_(group, self.bound)
        threshold = _scalar(self.bound, norm)
        fired = (torch.isfinite(norm) & (largest > threshold)).to(norm.dtype)
        return ClipResult(threshold=threshold, fired=fired, norm_before=norm, norm_after=global_norm(grads))


class AGCClipper(Clipper):
    """Adaptive gradient clipping, unit-wise (Brock et al. 2021); the final linear layer is skipped."""

    def __init__(self, ratio: float, eps: float = 1e-3):
        self.ratio, self.eps = ratio, eps
        self.name = f"agc:{_num(ratio)}" + ("" if eps == 1e-3 else f",eps={_num(eps)}")
        self._excluded: set[int] = set()
        self.excluded_names: list[str] = []  # parameter names left unclipped, set by prepare

    def prepare(self, model: nn.Module) -> None:
        """Exclude the parameters of the last ``nn.Linear`` registered in ``model``."""
        last = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                last = (name, module)
        self._excluded, self.excluded_names = set(), []
        if last is not None:
            prefix, module = last
            for pname, p in module.named_parameters():
                self._excluded.add(id(p))
                self.excluded_names.append(f"{prefix}.{pname}" if prefix else pname)

    def clip(self, parameters: Tensor | Iterable[Tensor]) -> ClipResult:
        if isinstance(parameters, Tensor):
            parameters = [parameters]
        params = [p for p in parameters if p.grad is not None]
        grads = [p.grad for p in params]
        norm = global_norm(grads)
        finite = torch.isfinite(norm)  # a non-finite step is left for the trainer to judge
        clipped = torch.zeros_like(norm)
        # Parameters of one shape are clipped together: a few kernels per shape instead of
        # several per parameter (a ResNet-34 has ~110 parameters but ~25 distinct shapes).
        groups: dict[tuple, list[Tensor]] = {}
        for p in params:
            if id(p) not in self._excluded:
                whole = p.dim() <= 1  # a 0-d or 1-d tensor is one unit
                groups.setdefault((whole, p.shape if not whole else None, p.dtype, p.device), []).append(p)
        for (whole, shape, dtype, _), members in groups.items():
            g_list = [p.grad for p in members]
            w_list = [p.detach() for p in members]
            wide = torch.promote_types(dtype, torch.float32)
            if whole:
                w_norm = torch.stack(torch._foreach_norm(w_list, 2, dtype=wide))
                g_norm = torch.stack(torch._foreach_norm(g_list, 2, dtype=wide))
            else:
                k, units = len(members), shape[0]  # one unit per output index (dim 0)
                g_stack = torch.stack(g_list)
                w_norm = torch.linalg.vector_norm(torch.stack(w_list).reshape(k, units, -1), dim=2, dtype=wide)
                g_norm = torch.linalg.vector_norm(g_stack.reshape(k, units, -1), dim=2, dtype=wide)
            limit = self.ratio * w_norm.clamp_min(self.eps)
            over = finite.to(limit.device) & (g_norm > limit)
            scale = torch.where(over, limit / g_norm.clamp_min(1e-6), torch.ones_like(g_norm)).to(dtype)
            clipped = clipped + over.sum().to(clipped.device, clipped.dtype)
            if whole:
                torch._foreach_mul_(g_list, list(scale.unbind(0)))
            else:
                g_stack.mul_(scale.reshape(k, units, *([1] * (len(shape) - 1))))
                torch._foreach_copy_(g_list, list(g_stack.unbind(0)))  # back into .grad, any strides
        fired = (clipped > 0).to(norm.dtype)
        return ClipResult(
            threshold=_scalar(self.ratio, norm), fired=fired, norm_before=norm, norm_after=global_norm(grads)
        )


class AutoClipper(_ScaleToThreshold):
    """Clip the global norm to the P-th percentile of the norm history (Seetharaman et al. 2020)."""

    def __init__(self, percentile: float, window: int | None = None):
        self.percentile, self.window = percentile, window
        self.name = f"autoclip:{_num(percentile)}" + ("" if window is None else f",window={window}")
        self._buffer: Tensor | None = None
        self._count = 0  # norms written so far (host-side, so no sync is needed to index)

    @property
    def history(self) -> Tensor:
        """The norms the next threshold is taken from (non-finite steps stored as nan)."""
        if self._buffer is None:
            return torch.empty(0)
        if self.window is None:
            return self._buffer[: self._count]
        return self._buffer[: min(self._count, self.window)]

    def _threshold(self, norm: Tensor) -> Tensor:
        self._record(torch.where(torch.isfinite(norm), norm, torch.full_like(norm, math.nan)))
        q = torch.nanquantile(self.history, self.percentile / 100.0)
        return torch.where(torch.isnan(q), torch.full_like(q, math.inf), q)  # only nan so far

    def _record(self, value: Tensor) -> None:
        if self._buffer is None:
            size = self.window if self.window is not None else 1024
            self._buffer = torch.full((size,), math.nan, dtype=torch.float32, device=value.device)
        elif self._buffer.device != value.device:
            self._buffer = self._buffer.to(value.device)
        if self.window is None and self._count == len(self._buffer):
            # grow by doubling; the host knows the count, so no value is read back
            grown = torch.full((2 * len(self._buffer),), math.nan, dtype=torch.float32, device=value.device)
            grown[: self._count] = self._buffer
            self._buffer = grown
        self._buffer[self._count % len(self._buffer)] = value  # device-side copy: no sync
        self._count += 1


class ZScoreClipper(_ScaleToThreshold):
    """Spike clipping against an EMA of the norm's mean and variance (as ZClip, 2025)."""

    def __init__(self, z: float = 2.5, alpha: float = 0.97, warmup: int = 25):
        self.z, self.alpha, self.warmup = z, alpha, warmup
        self.name = f"zscore:{_num(z)}"
        if (alpha, warmup) != (0.97, 25):
            self.name += f",alpha={_num(alpha)},warmup={warmup}"
        self.steps = 0  # clip calls so far
        self.mean: Tensor | None = None  # EMA of the norm after clipping (set after warm-up)
        self.var: Tensor | None = None
        self._warm: Tensor | None = None  # norms of the warm-up steps

    def _threshold(self, norm: Tensor) -> Tensor:
        if self.steps < self.warmup or self.mean is None:
            return torch.full_like(norm, math.inf)
        mean, var = self.mean.to(norm.device), self.var.to(norm.device)
        return mean + self.z * var.sqrt()

    def _observe(self, norm_after: Tensor) -> None:
        finite = torch.isfinite(norm_after)
        if self.steps < self.warmup:
            if self._warm is None or self._warm.device != norm_after.device:
                self._warm = torch.full((self.warmup,), math.nan, dtype=torch.float32, device=norm_after.device)
            self._warm[self.steps] = torch.where(finite, norm_after, torch.full_like(norm_after, math.nan))
            if self.steps == self.warmup - 1:  # warm-up done: statistics from its finite norms
                self.mean = torch.nanmean(self._warm)
                self.var = torch.nanmean((self._warm - self.mean) ** 2)
        else:
            a = self.alpha
            mean, var = self.mean.to(norm_after.device), self.var.to(norm_after.device)
            unset = torch.isnan(mean)  # every warm-up norm was non-finite: start from this one
            new_mean = torch.where(unset, norm_after, a * mean + (1 - a) * norm_after)
            new_var = torch.where(unset, torch.zeros_like(var), a * var + (1 - a) * (norm_after - new_mean) ** 2)
            self.mean = torch.where(finite, new_mean, mean)
            self.var = torch.where(finite, new_var, var)
        self.steps += 1


# -- parsing ------------------------------------------------------------------------------------


def parse_clip(spec: str | None) -> Clipper:
    """A fresh clipper from a spec such as ``"norm:1.0"`` or ``"agc:0.01,eps=1e-3"``.

    Stateful methods (AutoClip, z-score) keep their history in the returned object, so use one
    per training run. Raises :class:`GradlabError` naming the valid forms for a bad spec.
    """
    if spec is None:
        return Clipper()
    if not isinstance(spec, str):
        raise GradlabError(f"clip spec must be a string, got {spec!r}: use {VALID_FORMS}")
    text = spec.strip().lower()
    if text in ("", "none"):
        return Clipper()
    kind, value_text, options = _split(spec, text)
    if kind not in _METHODS:
        _bad(spec, f"unknown method {kind!r}")
    allowed, build = _METHODS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        _bad(spec, f"unknown option {unknown[0]!r} for {kind} (options: {', '.join(allowed) or 'none'})")
    return build(_SpecReader(spec, kind, options), value_text)


def _split(spec: str, text: str) -> tuple[str, str | None, dict[str, str]]:
    """``"kind:value,key=val,..."`` -> (kind, the value or None, the options)."""
    kind, _, rest = text.partition(":")
    parts = [p.strip() for p in rest.split(",")] if rest else []
    value_text = parts[0] if parts and "=" not in parts[0] else None
    options: dict[str, str] = {}
    for part in parts[1:] if value_text is not None else parts:
        key, eq, val = part.partition("=")
        if not eq or not key.strip():
            _bad(spec, f"{part!r} is not KEY=VALUE")
        options[key.strip()] = val.strip()
    return kind, value_text, options


@dataclass(frozen=True)
class _SpecReader:
    """Reads a spec's numbers, refusing bad ones with the spec named."""

    spec: str
    kind: str
    options: dict[str, str]

    def number(self, text: str | None, what: str, default: float | None) -> float:
        if text is None:
            if default is None:
                _bad(self.spec, f"{self.kind} needs a {what}, e.g. {self.kind}:1.0")
            return default  # type: ignore[return-value]
        try:
            value = float(text)
        except ValueError:
            _bad(self.spec, f"{what} {text!r} is not a number")
        if not math.isfinite(value) or value <= 0:
            _bad(self.spec, f"{what} must be a positive number, got {text}")
        return value

    def integer(self, text: str | None, what: str, default: int | None) -> int | None:
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            _bad(self.spec, f"{what} {text!r} is not a whole number")
        if value < 1:
            _bad(self.spec, f"{what} must be at least 1, got {text}")
        return value


def _autoclip(read: _SpecReader, value_text: str | None) -> Clipper:
    p = read.number(value_text, "percentile", 10.0)
    if p > 100:
        _bad(read.spec, f"percentile must be in (0, 100], got {value_text}")
    return AutoClipper(p, read.integer(read.options.get("window"), "window", None))


def _zscore(read: _SpecReader, value_text: str | None) -> Clipper:
    alpha = read.number(read.options.get("alpha"), "alpha", 0.97)
    if alpha >= 1:
        _bad(read.spec, f"alpha must be in (0, 1), got {read.options['alpha']}")
    return ZScoreClipper(read.number(value_text, "z threshold", 2.5), alpha,
                         read.integer(read.options.get("warmup"), "warmup", 25))


#: Each method's options and how its clipper is built from the spec.
_METHODS: dict[str, tuple[tuple[str, ...], Callable[[_SpecReader, str | None], Clipper]]] = {
    "norm": ((), lambda read, v: NormClipper(read.number(v, "threshold", None))),
    "value": ((), lambda read, v: ValueClipper(read.number(v, "bound", None))),
    "agc": (("eps",), lambda read, v: AGCClipper(read.number(v, "lambda", 0.01),
                                                 read.number(read.options.get("eps"), "eps", 1e-3))),
    "autoclip": (("window",), _autoclip),
    "zscore": (("alpha", "warmup"), _zscore),
}


def _bad(spec: str, why: str) -> NoReturn:
    raise GradlabError(f"bad clip spec {spec!r}: {why}; use {VALID_FORMS}")
