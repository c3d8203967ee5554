"""Gaussian expectations of an activation: E[phi(u)], E[phi(u)^2], E[phi'(u)^2] for u ~ N(0, q).

Composite Gauss-Legendre sums against the Gaussian density, with a finer set of panels where
phi has its features and panel edges at its kinks (accuracy: see the theory note in
:mod:`gradlab.theory.meanfield`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from gradlab.errors import GradlabError
from gradlab.theory.activations import Activation, resolve

_Z_MAX = 10.0  # the Gaussian density at 10 is 8e-23: nothing beyond matters in float64
_PANELS = 400
_ORDER = 8
# A map's moments are interpolated (linearly in log q) from a table over its range of q: at
# least 33 values, and 40 per factor e of range, which keeps the error below ~1e-4.
_GRID, _GRID_PER_E, _GRID_MAX = 33, 40, 400


@functools.lru_cache(maxsize=512)
def _gauss_nodes(q_lo: float, q_hi: float, breaks: tuple[float, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z and weights w with sum(w * f(z)) ~= E_z[f(z)], z ~ N(0, 1), for q in [q_lo, q_hi].

    ``breaks`` are extra panel edges (in z) where f has a kink, so no panel straddles one.
    """
    parts = [np.linspace(-_Z_MAX, _Z_MAX, _PANELS + 1), np.array([b for b in breaks if abs(b) < _Z_MAX])]
    # phi's features (kinks, the bend of tanh) sit at |sqrt(q) z| of order 1: resolve them for
    # both ends of the range. An odd count of edges puts one at 0, where ReLU's kink is.
    for q in {q_lo, q_hi}:
        if q > 0 and 40.0 / math.sqrt(q) < _Z_MAX:
            span = 40.0 / math.sqrt(q)
            parts.append(np.linspace(-span, span, _PANELS + 1))
    edges = np.unique(np.concatenate(parts))
    x, w = np.polynomial.legendre.leggauss(_ORDER)
    left, right = edges[:-1, None], edges[1:, None]
    half = (right - left) / 2
    z = (left + right) / 2 + half * x[None, :]
    weights = half * w[None, :] * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(z.ravel()), torch.from_numpy(weights.ravel())


def moments(
    phi: Callable[[torch.Tensor], torch.Tensor],
    qs: np.ndarray,
    max_of: int = 1,
    kinks: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E[phi(u)], E[phi(u)^2], E[phi'(u)^2]) for u = sqrt(q) z, z ~ N(0, 1), for each q in ``qs``.

    With ``max_of = K > 1``, z is instead the largest of K independent standard normals
    (density K * pdf(z) * cdf(z)^(K-1)): what a max-pooling window passes on. ``kinks`` are
    the points u where phi' jumps (0 is always a panel edge).
    """
    qs = np.asarray(qs, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(qs)) or np.any(qs < 0):
        raise GradlabError(f"the pre-activation variance q must be finite and >= 0, got {qs.min()}..{qs.max()}")
    breaks = tuple(sorted({round(k / math.sqrt(q), 15) for k in kinks for q in qs if q > 0 and k != 0}))
    z, w = _gauss_nodes(float(qs.min()), float(qs.max()), breaks)
    if max_of > 1:
        w = w * max_of * torch.special.ndtr(z) ** (max_of - 1)
    with torch.enable_grad():
        u = (torch.from_numpy(np.sqrt(qs))[:, None] * z[None, :]).requires_grad_(True)
        y = phi(u)
        if not isinstance(y, torch.Tensor) or y.shape != u.shape:
            raise GradlabError("the activation must be an elementwise function of a tensor")
        dy = torch.autograd.grad(y.sum(), u, allow_unused=True)[0] if y.requires_grad else None
    dy = torch.zeros_like(u) if dy is None else dy  # a constant phi has no derivative path
    y, dy = y.detach().to(torch.float64), dy.to(torch.float64)
    return tuple((w * v).sum(1).numpy() for v in (y, y * y, dy * dy))  # type: ignore[return-value]


def map_moments(
    phi: Callable[[torch.Tensor], torch.Tensor], q_map: torch.Tensor, max_of: int = 1, kinks: tuple[float, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`moments` for every entry of ``q_map``, by interpolation in a table over its range."""
    q = q_map.detach().to(torch.float64).reshape(-1).numpy()
    lo, hi = float(q.min()), float(q.max())
    if hi - lo <= 1e-12 * max(hi, 1e-300):
        out = moments(phi, np.array([hi]), max_of, kinks)
        return tuple(torch.full_like(q_map, float(v[0])) for v in out)  # type: ignore[return-value]
    if lo > 0:
        n = int(min(_GRID_MAX, max(_GRID, math.ceil(_GRID_PER_E * math.log(hi / lo)) + 1)))
        grid = np.geomspace(lo, hi, n)
        x, xs = np.log(q), np.log(grid)
    else:  # q = 0 somewhere (all-zero weights): interpolate in q itself
        grid = np.linspace(lo, hi, _GRID_MAX)
        x, xs = q, grid
    table = moments(phi, grid, max_of, kinks)
    return tuple(torch.from_numpy(np.interp(x, xs, v)).reshape(q_map.shape) for v in table)  # type: ignore[return-value]


def _scalar_q(q: float) -> np.ndarray:
    try:
        value = float(q)
    except (TypeError, ValueError):
        raise GradlabError(f"q must be a number (the pre-activation variance), got {q!r}") from None
    return np.array([value])


def chi(activation: Activation, q: float = 1.0, *, kinks: tuple[float, ...] = ()) -> float:
    """The sigma_w^2-free part of the per-layer gradient factor, E_z[phi'(sqrt(q) z)^2].

    ``activation`` is a name from :data:`ACTIVATIONS` (also ``linear``/``none`` for identity and
    ``leaky_relu:SLOPE``) or any elementwise torch function; ``q`` is the pre-activation
    variance. Multiply by sigma_w^2 = fan_in * Var(w) for the factor of the squared gradient
    norm per layer: ReLU gives 1/2 for every q, so He init (sigma_w^2 = 2) gives 1. For a
    callable whose derivative jumps away from 0 (hardtanh at +-1), pass those points as
    ``kinks`` for full accuracy (without them the error is up to about 1e-2 relative).
    """
    return float(moments(resolve(activation), _scalar_q(q), kinks=tuple(kinks))[2][0])


def qmap(activation: Activation, q: float = 1.0, *, kinks: tuple[float, ...] = ()) -> float:
    """The forward variance map's activation part, E_z[phi(sqrt(q) z)^2] (z ~ N(0, 1)).

    The next pre-activation variance is sigma_w^2 * qmap(phi, q) + sigma_b^2.
    """
    return float(moments(resolve(activation), _scalar_q(q), kinks=tuple(kinks))[1][0])
