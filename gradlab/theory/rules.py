"""The mean-field propagation as a table of per-op rules, and the short driver that walks it.

The prediction carries per-entry maps through the traced ops, for one sample (batch 1):
forward, Q = E[h^2] at each layer output and M = E[a^2], MU = E[a] after the activation;
backward, G = E[g^2] for g = dL/dh. Every layer mixes its inputs' channels with equal
weight variance, so the maps are equal across channels and vary only over positions, where
zero padding makes border entries see fewer inputs (forward) and fewer outputs (backward).
Tracking that, rather than one average per layer, matters: on 8x8 maps the border-weighted
factor differs from the position-averaged one by about 4% per layer.

:data:`RULES` maps each traced torch function name to the rule that moves the maps across it;
:func:`propagate` looks every op up there and sends the ops without an entry to
:func:`unknown_op`, which refuses them (see its docstring for the errors). Each rule states its
formula in its docstring. A rule updates the forward maps at once and appends its backward step
(G after the op -> G before it) to the current layer's ``back`` list, which the predictor
applies in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from gradlab.errors import GradlabError
from gradlab.theory.activations import Activation, resolve
from gradlab.theory.geometry import (
    layer_forward,
    max_pool_windows,
    pool_window,
    squeeze_channels,
    window_counts,
)
from gradlab.theory.ops import (
    ACT_OPS,
    DROPOUT_OPS,
    LAYER_OPS,
    MAX_POOL_OPS,
    POOL_OPS,
    SAME_OPS,
    SCALAR_OPS,
    SHAPE_OPS,
    arg,
    describe,
    f64,
    kinks_of,
    label,
    only_data_tensor,
    replay,
    vjp,
)
from gradlab.theory.quadrature import map_moments
from gradlab.theory.trace import Op

Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Layer:
    """One Conv/Linear layer of the chain and what lies between it and the next layer."""

    op: Op
    var_w: float
    var_b: float
    fan_in: int
    fan_out: int
    q: float  # mean E[h^2] over the layer's output entries
    approx: bool
    labels: list[str] = field(default_factory=list)  # what the map to the next layer does
    # G at this layer's output -> G at the previous layer's output, applied in order
    back: list[Map] = field(default_factory=list)


@dataclass
class Walk:
    """Where the propagation stands between two ops.

    ``stage`` is ``input`` before the first layer (``m_map`` holds the data's E[x^2]), ``pre``
    while ``q_map`` is live (a layer's output; elementwise ops gather in ``pending``) and
    ``post`` once the activation has been applied (``m_map`` and ``mu_map`` are live).
    """

    override: Map | None  # the activation= the caller passed, resolved
    activation: Activation | None  # as the caller spelled it, for the labels
    m_map: torch.Tensor
    q_map: torch.Tensor
    mu_map: torch.Tensor | None = None
    stage: str = "input"
    approx: bool = False  # set from the first pooling step on: see the theory note
    layers: list[Layer] = field(default_factory=list)
    pending: list[Op] = field(default_factory=list)  # elementwise ops since the last layer

    def step_back(self, step: Map) -> None:
        """Append a backward step to the current layer (G after the op -> G before it)."""
        self.layers[-1].back.append(step)

    def activation_fn(self) -> tuple[Map, tuple[float, ...]]:
        """phi, the pending elementwise ops composed (or the override), and its kinks; labels it."""
        layer = self.layers[-1]
        if self.pending and self.override is not None:
            act = self.activation
            layer.labels.append(act if isinstance(act, str) else getattr(act, "__name__", "custom"))
            return self.override, ()
        layer.labels.extend([label(op) for op in self.pending] or ["identity"])
        # Kinks of the op that acts on h itself; later ops see transformed values.
        kinks = kinks_of(self.pending[0]) if self.pending else ()
        return _compose([replay(op) for op in self.pending]), kinks

    def realise(self) -> None:
        """Apply phi: MU = E[phi(h)], M = E[phi(h)^2] per entry; backward G_h = E[phi'(h)^2] * G_a."""
        phi, kinks = self.activation_fn()
        self.mu_map, self.m_map, d_map = map_moments(phi, self.q_map, 1, kinks)
        self.step_back(lambda g, d=squeeze_channels(d_map): g * d)  # noqa: B008 (binds this layer's map)
        self.stage = "post"
        self.pending.clear()

    def realise_max_pool(self, op: Op) -> None:
        """Apply phi and a max pool together: each window passes on phi(max) and routes its
        gradient to that entry alone, so M = E[phi(M_K)^2] and G_h = E[phi'(M_K)^2] * G, M_K the
        largest of the window's K real entries, taken as independent N(0, q), q their mean."""
        phi, kinks = self.activation_fn()
        windows = max_pool_windows(op)
        q_win = windows(self.q_map)
        count = window_counts(op, self.q_map)
        mu_map, m_map, d_map = (torch.empty_like(q_win) for _ in range(3))
        for k in torch.unique(count).tolist():
            sel = count == k
            moments = map_moments(phi, q_win[sel], int(k), kinks)
            for target, value in zip((mu_map, m_map, d_map), moments, strict=True):
                target[sel] = value
        self.mu_map, self.m_map = mu_map, m_map
        shape = tuple(self.q_map.shape)
        self.step_back(lambda g, d=squeeze_channels(d_map), w=windows, s=shape: vjp(w, s, g * d))  # noqa: B008 (binds)
        self.layers[-1].labels.append(label(op))
        self.approx = True
        self.stage = "post"
        self.pending.clear()

    def require_a_layer_before(self, op: Op) -> None:
        """Refuse an op that is not a layer, reshape, copy or dropout ahead of the first layer."""
        if self.stage == "input":
            raise GradlabError(
                f"{describe(op)} runs before the first layer; the prediction takes the data as the first layer sees it"
            )


Rule = Callable[[Walk, Op], None]


def _compose(fns: list[Map]) -> Map:
    def phi(t: torch.Tensor) -> torch.Tensor:
        for f in fns:
            t = f(t)
        return t

    return phi


# ----------------------------------------------------------------------------- the rules


def layer_op(walk: Walk, op: Op) -> None:
    """Conv/Linear: Q = var_w * (sum of M over the inputs each output unit reads) + var_b.

    For a dense layer or an unpadded convolution that is fan_in * var_w * E[a^2] + var_b.
    var_w and var_b are the mean squared entries of the actual weight and bias. The backward
    step across the weights, G_in = var_w * (sum of G over the outputs reading each input), is
    applied by the predictor (``geometry.layer_backward``), since it needs the next layer.
    """
    weight = arg(op, 1, "weight", None)
    if arg(op, 0, "input", None) is not op.data_arg or not isinstance(weight, torch.Tensor):
        raise GradlabError(f"{describe(op)} is fed its weight from the data path; not a plain layer")
    if walk.stage == "pre":
        walk.realise()
    bias = arg(op, 2, "bias", None)
    weight = f64(weight)
    var_w = float((weight**2).mean())
    var_b = float((f64(bias) ** 2).mean()) if isinstance(bias, torch.Tensor) else 0.0
    receptive = int(np.prod(weight.shape[2:])) if weight.dim() > 2 else 1
    walk.q_map = layer_forward(op, walk.m_map, var_w, var_b)
    fan_in, fan_out = int(weight.shape[1]) * receptive, int(weight.shape[0]) * receptive
    walk.layers.append(Layer(op, var_w, var_b, fan_in, fan_out, float(walk.q_map.mean()), walk.approx))
    walk.stage = "pre"


def copy_op(walk: Walk, op: Op) -> None:
    """Copies and casts: every map unchanged (the maps stay float64)."""


def reshape_op(walk: Walk, op: Op) -> None:
    """Reshapes: the live maps move with their entries; backward, G moves back (the vjp of the move)."""
    fn, in_shape = replay(op), (1, *op.in_shape[1:])
    if walk.stage == "input":
        walk.m_map = fn(walk.m_map)
        return
    if walk.stage == "pre":
        walk.q_map = fn(walk.q_map)
    else:
        walk.m_map, walk.mu_map = fn(walk.m_map), fn(walk.mu_map)
    walk.step_back(lambda g, fn=fn, s=in_shape: vjp(fn, s, g))


def dropout_op(walk: Walk, op: Op) -> None:
    """Dropout with drop probability p in training mode: M -> M / (1-p), G -> G / (1-p); MU kept.

    E[(a * mask / (1-p))^2] = E[a^2] / (1-p), and the same for the gradient it passes back.
    In eval mode (or p = 0) the factor is 1.
    """
    p = float(arg(op, 1, "p", 0.5))
    training = bool(arg(op, 2, "training", arg(op, 2, "train", True)))
    factor = 1.0 / (1.0 - p) if training and p > 0 else 1.0
    if walk.stage == "pre":
        walk.realise()
    walk.m_map = walk.m_map * factor
    if walk.stage == "post":
        walk.step_back(lambda g, f=factor: g * f)
        walk.layers[-1].labels.append(label(op))


def max_pool_op(walk: Walk, op: Op) -> None:
    """Max pooling right after the activation: see :meth:`Walk.realise_max_pool` for the formula."""
    walk.require_a_layer_before(op)
    if walk.stage != "pre":
        raise GradlabError(f"{describe(op)}: max pooling is modelled only right after the activation")
    if arg(op, 6, "return_indices", False):
        raise GradlabError(f"{describe(op)} returns indices; that is not a plain chain")
    walk.realise_max_pool(op)


def avg_pool_op(walk: Walk, op: Op) -> None:
    """A non-overlapping average over K entries: MU -> avg(MU), M -> avg(MU)^2 + avg(M - MU^2) / K,
    G -> G / K^2 on each of the K entries (so ||g||^2 / K in total).

    The forward step takes the averaged entries as independent (the result is flagged approx).
    """
    walk.require_a_layer_before(op)
    k = pool_window(op)
    if walk.stage == "pre":
        walk.realise()
    fn, in_shape = replay(op), (1, *op.in_shape[1:])
    mu_new = fn(walk.mu_map)
    walk.m_map = mu_new**2 + fn(walk.m_map - walk.mu_map**2) / k
    walk.mu_map = mu_new
    # The vjp of the average hands each entry G/K; the second 1/K is the square's.
    walk.step_back(lambda g, fn=fn, s=in_shape, k=k: vjp(fn, s, g) / k)
    walk.layers[-1].labels.append(label(op))
    walk.approx = True


def elementwise_op(walk: Walk, op: Op) -> None:
    """An elementwise activation or arithmetic with a number: gathered into phi, which is
    applied at the next layer, dropout or pool (M = E[phi(h)^2], G_h = E[phi'(h)^2] * G_a)."""
    walk.require_a_layer_before(op)
    if not only_data_tensor(op):
        raise _not_modelled(op)
    _gather(walk, op)


def unknown_op(walk: Walk, op: Op) -> None:
    """An op without a rule.

    Refused with a one-line GradlabError: ahead of the first layer "runs before the first
    layer"; between layers "... is not modelled ... pass activation= if it is an elementwise
    activation". With ``activation=`` given, a unary op that keeps its input's shape is taken
    as that activation and gathered like :func:`elementwise_op`.
    """
    walk.require_a_layer_before(op)
    if walk.override is None or not only_data_tensor(op) or op.out_shape != op.in_shape:
        raise _not_modelled(op)
    _gather(walk, op)


def _gather(walk: Walk, op: Op) -> None:
    if walk.stage == "post":
        raise GradlabError(f"{describe(op)} after pooling or dropout is not modelled; apply the activation first")
    walk.pending.append(op)


def _not_modelled(op: Op) -> GradlabError:
    return GradlabError(
        f"{describe(op)} between layers is not modelled (only elementwise activations, "
        "reshapes, dropout and average or max pooling are); pass activation= if it is an elementwise activation"
    )


#: The single dispatch: traced torch function name -> rule. Names not here go to unknown_op.
RULES: dict[str, Rule] = {
    **dict.fromkeys(LAYER_OPS, layer_op),
    **dict.fromkeys(SAME_OPS, copy_op),
    **dict.fromkeys(SHAPE_OPS, reshape_op),
    **dict.fromkeys(DROPOUT_OPS, dropout_op),
    **dict.fromkeys(MAX_POOL_OPS, max_pool_op),
    **dict.fromkeys(POOL_OPS, avg_pool_op),
    **dict.fromkeys(ACT_OPS | SCALAR_OPS, elementwise_op),
}


def propagate(path: list[Op], activation: Activation | None, input_second_moment: float) -> list[Layer]:
    """Run the forward maps along the chain, op by op through :data:`RULES`; return the layers,
    each with the backward steps between it and the next layer."""
    last = max((i for i, op in enumerate(path) if op.name in LAYER_OPS), default=None)
    if last is None:
        raise GradlabError("found no Linear or Conv layer between the model's input and output")
    m_map = torch.full((1, *path[0].in_shape[1:]), float(input_second_moment), dtype=torch.float64)
    override = resolve(activation) if activation is not None else None
    walk = Walk(override=override, activation=activation, m_map=m_map, q_map=m_map)
    for op in path[: last + 1]:
        RULES.get(op.name, unknown_op)(walk, op)
    return walk.layers
