"""Forward hooks: the layers' forward execution order, activation statistics, and dL/dh.

One forward hook per layer does three jobs:

- on the first forward it notes the order in which layers produce their outputs (depth);
- while armed (only for a step that will be recorded) it reduces the output to a few scalars
  on the device (see reduce.py): on CUDA one ``var_mean`` kernel (mean and variance) plus one
  counting kernel for ReLU-family (non-zeros) and sigmoid/tanh layers (outputs inside the
  non-saturated band); on the CPU, where those kernels are slow, shifted sums instead;
- while armed it registers a tensor hook on the output, which adds the gradient's sum of
  squares: dL/dh at the layer's output (and, for act_grad_cos / act_grad_cos_class, the
  per-example cosine sums of dL/dh, see similarity.py). Tensor hooks, not full backward module hooks, so
  in-place activations after the layer (``ReLU(inplace=True)``) are fine: a hook registered
  before an in-place op receives the gradient of the value the layer produced.

The scalars are kept as 0-d device tensors in Python lists until ``finalize`` merges them with
a few vectorised kernels (in float64, so that the variance of many calls, micro-batches or
ranks is combined without cancellation). No activation, no graph node is kept: the lists hold
only the reduced scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from gradlab.recorder import dist as rdist
from gradlab.recorder.layers import Layer
from gradlab.recorder.metrics import (
    ACT_COS,
    ACT_DEAD_UNITS,
    ACT_DEAD_UNITS_RUN,
    ACT_GRAD_COS,
    ACT_GRAD_COS_CLASS,
    ACT_GRAD_METRICS,
    ACT_GRAD_NORM,
    ACT_MEAN,
    ACT_SATURATED_FRAC,
    ACT_STD,
    ACT_ZERO_FRAC,
    saturation_band,
)
from gradlab.recorder.reduce import host_to_device, in_band_count, moments, nonzero_count
from gradlab.recorder.reduce import sumsq as _sumsq
from gradlab.recorder.similarity import MIN_BATCH, alive_units, class_cosine_sums, cosine_sums, unit_dim

_in_backward = getattr(torch._C, "_current_graph_task_id", lambda: -1)


def _tensors(output: Any, depth: int = 0) -> list[torch.Tensor]:
    """Every tensor of a module's output: a tensor, or tensors nested in tuples, lists and dicts
    (a Hugging Face ``ModelOutput`` is a dict; an LSTM returns ``(output, (h_n, c_n))``)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if depth > 3:
        return []
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item, depth + 1)]
    return []


_is_transformed = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", lambda t: False)


def _mha_out_proj(root: torch.nn.Module | None, layers: Sequence[Layer]) -> dict[int, torch.nn.Module]:
    """Layers that are the ``out_proj`` of a ``MultiheadAttention``: the attention module uses
    its weights directly and never calls it, so its output is the attention's first output."""
    if root is None:
        return {}
    found: dict[int, torch.nn.Module] = {}
    for mod in root.modules():
        if isinstance(mod, torch.nn.MultiheadAttention):
            for layer in layers:
                if layer.module is mod.out_proj:
                    found[layer.index] = mod
    return found


class ForwardTap:
    """The forward hooks of one recorder and the activation scalars of the current step."""

    def __init__(self, layers: Sequence[Layer], metrics: Sequence[str], saturation_threshold: float,
                 ranks: rdist.Ranks, root: torch.nn.Module | None = None) -> None:
        self.layers = list(layers)
        # hooked on the attention module instead (see _mha_out_proj)
        self.hooked_on = _mha_out_proj(root, self.layers)
        self.num_layers = len(layers)
        self.ranks = ranks
        self.want_grad = bool(ACT_GRAD_METRICS & set(metrics))
        self.want_grad_cos = ACT_GRAD_COS in metrics
        self.want_grad_cos_class = ACT_GRAD_COS_CLASS in metrics
        self.want_cos = ACT_COS in metrics
        self.want_units = bool({ACT_DEAD_UNITS, ACT_DEAD_UNITS_RUN} & set(metrics))
        self.want_stats = bool({ACT_MEAN, ACT_STD, ACT_ZERO_FRAC, ACT_SATURATED_FRAC, ACT_COS} & set(metrics)
                               ) or self.want_units
        self.want_any = self.want_grad or self.want_stats
        self.is_relu = [bool({ACT_ZERO_FRAC, ACT_DEAD_UNITS, ACT_DEAD_UNITS_RUN} & set(metrics))
                        and layer.kind == "relu" for layer in layers]
        # plain ReLU / ReLU6 outputs are never negative: counting non-zeros is cheaper there
        self.nonneg = [isinstance(layer.module, (torch.nn.ReLU, torch.nn.ReLU6)) for layer in layers]
        self.band: list[tuple[float, float] | None] = [
            saturation_band(layer.kind, saturation_threshold)
            if ACT_SATURATED_FRAC in metrics and layer.kind in ("sigmoid", "tanh") else None
            for layer in layers
        ]
        self.has_relu = np.array(self.is_relu, dtype=bool)
        self.has_band = np.array([b is not None for b in self.band], dtype=bool)

        self.handles: list[Any] = []
        self.armed = False
        self.removed = False
        self.discovering = True
        self.order: list[int] = []
        self._seen = bytearray(self.num_layers)
        self.labels: torch.Tensor | None = None  # this step's batch labels (set_labels)
        # units along dim 1 of 3-d outputs: set from the layer run just before (a convolution)
        self.channels_first = [False] * self.num_layers
        # act_dead_units_run: per layer, the units dead at every recorded step so far
        self.run_dead: dict[int, torch.Tensor] = {}
        self.compiled_seen = False  # a compiled graph calls our hooks: never detach them again
        self._from_compiled = None
        if self.want_any:
            # A compiled forward reaches the hook through this entry, which dynamo does not trace
            # (a graph break), so the statistics and tensor hooks run eagerly there too.
            self._from_compiled = torch.compiler.disable(self._on_output_from_compiled)
        self._cache: dict[Any, torch.Tensor] = {}
        self._clear()

    # -- hooks ----------------------------------------------------------------------------
    def attach(self) -> None:
        if not self.handles and not self.removed:
            self.handles = [
                self.hooked_on[layer.index].register_forward_hook(partial(self._on_output_first, layer.index))
                if layer.index in self.hooked_on else
                layer.module.register_forward_hook(partial(self._on_output, layer.index))
                for layer in self.layers
            ]

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def arm(self, on: bool) -> None:
        """Hooks work only for steps that are recorded; between them they are detached."""
        on = on and self.want_any and not self.removed
        self.armed = on
        if on:
            self.attach()
        elif not self.discovering and not self.compiled_seen:
            self.detach()

    def finish_discovery(self) -> list[int]:
        """Layer indices in forward order; layers never run follow in registration order."""
        self.discovering = False
        seen = set(self.order)
        return self.order + [i for i in range(self.num_layers) if i not in seen]

    def remove(self) -> None:
        self.removed = True
        self.armed = False
        self.detach()
        self._clear()
        self._cache.clear()
        self.run_dead.clear()

    def _on_output_first(self, idx: int, module: torch.nn.Module, args: Any, output: Any) -> None:
        # a MultiheadAttention's out_proj: the attention's first output is what it produced
        first = _tensors(output)
        return self._on_output(idx, module, args, first[0] if first else None)

    def _on_output(self, idx: int, module: torch.nn.Module, args: Any, output: Any) -> None:
        if torch.compiler.is_compiling():
            # Traced by dynamo: default metrics add nothing to the graph; activation metrics
            # leave it through the disabled entry.
            if self._from_compiled is not None:
                self._from_compiled(idx, output)
            return None
        if self.discovering and not self._seen[idx]:
            self._discovered(idx)
        if self.armed:
            self._observe(idx, output)
        return None

    def _discovered(self, idx: int) -> None:
        self._seen[idx] = 1
        if self.order:
            before = self.layers[self.order[-1]].module
            conv_like = (torch.nn.modules.conv._ConvNd, torch.nn.modules.batchnorm._NormBase,
                         torch.nn.GroupNorm, torch.nn.modules.pooling._MaxPoolNd)
            self.channels_first[idx] = isinstance(before, conv_like) or self.channels_first[self.order[-1]]
        self.channels_first[idx] = self.channels_first[idx] or isinstance(
            self.layers[idx].module, torch.nn.modules.conv._ConvNd)
        self.order.append(idx)

    def _on_output_from_compiled(self, idx: int, output: Any) -> None:
        self.compiled_seen = True
        if self.discovering and not self._seen[idx]:
            self._discovered(idx)
        if self.armed and not self.removed:
            self._observe(idx, output)

    def _observe(self, idx: int, output: Any) -> None:
        # Evaluation under no_grad is not part of the training step.
        if not torch.is_grad_enabled():
            return
        if _in_backward() != -1:
            # Re-computation during backward (activation checkpointing). Non-reentrant
            # checkpointing ran the forward with gradients on, and it was measured then; the
            # reentrant kind ran it under no_grad, so this is the only forward there is.
            if self.fwd_seen[idx]:
                return
        else:
            self.fwd_seen[idx] = 1
        tensors = [t for t in _tensors(output)
                   if t.is_floating_point() and t.numel() > 0 and not _is_transformed(t)]
        # tensors inside torch.func transforms (vmap, grad) are not the step's activations
        for k, x in enumerate(tensors):
            self._observe_tensor(idx, x, first=k == 0)

    def _observe_tensor(self, idx: int, x: torch.Tensor, first: bool) -> None:
        if self.want_stats:
            xd = x.detach()
            kind, vals = moments(xd)
            if kind == "mv":
                self.f_idx.append(idx)
                self.f_n.append(xd.numel())
                self.f_a.append(vals[0])
                self.f_b.append(vals[1])
            else:
                self.l_idx.append(idx)
                self.l_n.append(xd.numel())
                self.l_c.append(vals[0])
                self.l_a.append(vals[1])
                self.l_b.append(vals[2])
            if self.is_relu[idx]:
                self.d_idx.append(idx)
                self.d_cnt.append(nonzero_count(xd, self.nonneg[idx]))
            band = self.band[idx]
            if band is not None:
                self.s_idx.append(idx)
                self.s_cnt.append(in_band_count(xd, *band))
            if self.want_cos and x.dim() >= 1 and x.shape[0] >= MIN_BATCH:
                self.c_idx.append(idx)
                self.c_sums.append(torch.stack(cosine_sums(xd)))
            if self.want_units and self.is_relu[idx] and first:
                dim = unit_dim(xd, self.channels_first[idx])
                if dim is not None:
                    alive = alive_units(xd, dim, self.nonneg[idx])
                    prev = self.u_alive.get(idx)
                    # several calls in one step: a unit is dead only if dead in every call
                    self.u_alive[idx] = alive if prev is None or prev.shape != alive.shape else prev | alive
        if self.want_grad and x.requires_grad:
            labels = self.labels
            if labels is not None and (labels.shape[0] != x.shape[0] or x.dim() < 1):
                labels = None  # not one label per example of this output: no same-class pairs
            x.register_hook(partial(self._on_grad, idx, labels))

    def _on_grad(self, idx: int, labels: torch.Tensor | None, g: torch.Tensor) -> None:
        if self.armed and not self.removed and not _is_transformed(g):
            self.g_idx.append(idx)
            self.g_sq.append(_sumsq(g))
            if g.dim() >= 1 and g.shape[0] >= MIN_BATCH:
                if self.want_grad_cos:
                    self.gc_idx.append(idx)
                    self.gc_sums.append(torch.stack(cosine_sums(g)))
                if self.want_grad_cos_class and labels is not None:
                    self.gk_idx.append(idx)
                    self.gk_sums.append(torch.stack(class_cosine_sums(g, labels.to(g.device, non_blocking=True))))
        return None

    # -- per step ---------------------------------------------------------------------------
    _STAGED = ("f_idx", "f_n", "f_a", "f_b", "l_idx", "l_n", "l_c", "l_a", "l_b",
               "d_idx", "d_cnt", "s_idx", "s_cnt", "g_idx", "g_sq", "c_idx", "c_sums",
               "gc_idx", "gc_sums", "gk_idx", "gk_sums")

    def _clear(self) -> None:
        # f_*: (index, count, mean, variance); l_*: (index, count, shift c, sum of x - c, sum
        # of (x - c)^2); d_*: non-zero counts; s_*: in-band counts; g_*: dL/dh sums of squares;
        # c_*, gc_*, gk_*: (cosine sum, pair count) of outputs, of dL/dh, of same-label dL/dh.
        for name in self._STAGED:
            setattr(self, name, [])
        self.u_alive: dict[int, torch.Tensor] = {}  # units alive in this step's calls
        self.fwd_seen = bytearray(self.num_layers)  # layers measured in this step's forward
        self._mark: dict[str, int] | None = None

    def staged_any(self) -> bool:
        """Whether any forward hook staged a value since the last step."""
        return any(getattr(self, name) for name in ("f_idx", "l_idx", "d_idx", "s_idx", "g_idx", "c_idx"))

    def discard(self) -> None:
        """Forget the current step's scalars (a step that is not recorded, or was skipped)."""
        self._clear()

    def mark(self) -> None:
        """Remember where the scalars of the forward pass about to start begin."""
        self._mark = {name: len(getattr(self, name)) for name in self._STAGED}

    def discard_before_mark(self) -> None:
        """Forget the scalars staged before the last mark (they belong to a skipped step);
        without a mark since the last step (a compiled forward), forget everything."""
        if self._mark is None:
            self._clear()
            return
        for name in self._STAGED:
            del getattr(self, name)[: self._mark[name]]
        self.u_alive = {}  # merged over calls, cannot be split: this step has no dead-unit rows
        self._mark = None

    def _const(self, values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # Index and count vectors repeat from step to step: build each on the device once.
        key = (tuple(values), dtype, device)
        t = self._cache.get(key)
        if t is None:
            if len(self._cache) > 256:
                self._cache.clear()
            t = host_to_device(values, dtype, device)
            self._cache[key] = t
        return t

    def finalize(self, views: dict[str, torch.Tensor], device: torch.device,
                 grad_scale: torch.Tensor | float | None = None) -> dict[str, np.ndarray]:
        """Merges the step's scalars into per-layer values written to ``views``; returns the
        per-metric validity masks. Under torch.distributed the sums cover all ranks.
        ``grad_scale`` is a GradScaler's loss scale, divided out of dL/dh."""
        sums, alive_idx, alive = self._gather(device, grad_scale)
        masks = self._write_views(views, sums, device)
        if alive_idx:
            masks.update(self._dead_units(views, alive_idx, alive, device))
        self._clear()
        return masks

    def _gather(self, device: torch.device, grad_scale: torch.Tensor | float | None
                ) -> tuple[torch.Tensor, list[int], list[torch.Tensor]]:
        """The step's per-layer sums (all ranks), and which units were alive, per layer."""
        L = self.num_layers
        acc = torch.float32 if device.type == "mps" else torch.float64
        # Columns: count, sum, sum of squares, non-zeros, inside band, gradient sum of squares,
        # then (cosine sum, pairs) of outputs, of dL/dh, of same-label dL/dh.
        sums = torch.zeros(L, 12, dtype=acc, device=device)
        long = torch.long
        if self.f_idx:
            n = self._const(self.f_n, acc, device)
            mean = torch.stack(self.f_a).to(acc)
            var = torch.stack(self.f_b).to(acc)
            part = torch.stack([n, n * mean, n * (var + mean * mean)], 1)
            sums[:, :3].index_add_(0, self._const(self.f_idx, long, device), part)
        if self.l_idx:
            n = self._const(self.l_n, acc, device)
            c = torch.stack(self.l_c).to(acc)
            s1 = torch.stack(self.l_a).to(acc)
            s2 = torch.stack(self.l_b).to(acc)
            mean = c + s1 / n
            var = torch.clamp_min((s2 - s1 * s1 / n) / n, 0.0)
            part = torch.stack([n, n * mean, n * (var + mean * mean)], 1)
            sums[:, :3].index_add_(0, self._const(self.l_idx, long, device), part)
        if self.d_idx:
            sums[:, 3].index_add_(0, self._const(self.d_idx, long, device), torch.stack(self.d_cnt).to(acc))
        if self.s_idx:
            sums[:, 4].index_add_(0, self._const(self.s_idx, long, device), torch.stack(self.s_cnt).to(acc))
        if self.g_idx:
            sums[:, 5].index_add_(0, self._const(self.g_idx, long, device), torch.stack(self.g_sq).to(acc))
        for col, idx, vals in ((6, self.c_idx, self.c_sums), (8, self.gc_idx, self.gc_sums),
                               (10, self.gk_idx, self.gk_sums)):
            if idx:
                sums[:, col:col + 2].index_add_(0, self._const(idx, long, device), torch.stack(vals).to(acc))
        alive_idx = sorted(self.u_alive)
        alive = [self.u_alive[i] for i in alive_idx]
        if self.ranks.distributed and self.want_units:
            alive = self._reduce_alive(alive, device)
        if self.ranks.distributed:
            rdist.all_reduce_sum(sums)
            # Each rank's dL/dh is of its local mean loss; the global mean loss scales it by
            # 1/world_size, as DDP's gradient averaging does for the parameters.
            sums[:, 5] /= float(self.ranks.world_size) ** 2
        if grad_scale is not None and self.g_idx:
            scale = grad_scale
            if isinstance(scale, torch.Tensor):
                scale = scale.to(device=device, dtype=acc)
            sums[:, 5] /= scale * scale
        return sums, alive_idx, alive

    def _write_views(self, views: dict[str, torch.Tensor], sums: torch.Tensor,
                     device: torch.device) -> dict[str, np.ndarray]:
        """Per-layer values from the sums into ``views``; the validity mask of each metric."""
        L = self.num_layers
        stat = np.zeros(L, dtype=bool)
        stat[self.f_idx] = True
        stat[self.l_idx] = True
        grad = np.zeros(L, dtype=bool)
        grad[self.g_idx] = True
        count, s1, s2 = sums[:, 0], sums[:, 1], sums[:, 2]
        masks: dict[str, np.ndarray] = {}
        if ACT_MEAN in views or ACT_STD in views:
            mean = s1 / count
            if ACT_MEAN in views:
                views[ACT_MEAN].copy_(mean)
                masks[ACT_MEAN] = stat
            if ACT_STD in views:
                var = torch.clamp_min(s2 / count - mean * mean, 0.0)
                views[ACT_STD].copy_(torch.sqrt(var))
                masks[ACT_STD] = stat
        if ACT_ZERO_FRAC in views:
            views[ACT_ZERO_FRAC].copy_((count - sums[:, 3]) / count)
            masks[ACT_ZERO_FRAC] = stat & self.has_relu
        for metric, col, staged in ((ACT_COS, 6, self.c_idx), (ACT_GRAD_COS, 8, self.gc_idx)):
            if metric in views:
                views[metric].copy_(_pair_mean(sums[:, col], sums[:, col + 1]))
                masks[metric] = _mask(L, staged)
        if ACT_GRAD_COS_CLASS in views:
            # NaN where a layer had dL/dh but no labels, or no label shared by two examples
            views[ACT_GRAD_COS_CLASS].copy_(_pair_mean(sums[:, 10], sums[:, 11]))
            views[ACT_GRAD_COS_CLASS].masked_fill_(self._const(self._no_class(L), torch.bool, device), float("nan"))
            masks[ACT_GRAD_COS_CLASS] = _mask(L, self.gc_idx if self.want_grad_cos else self.g_idx)
        if ACT_SATURATED_FRAC in views:
            views[ACT_SATURATED_FRAC].copy_((count - sums[:, 4]) / count)
            masks[ACT_SATURATED_FRAC] = stat & self.has_band
        if ACT_GRAD_NORM in views:
            views[ACT_GRAD_NORM].copy_(torch.sqrt(sums[:, 5]))
            masks[ACT_GRAD_NORM] = grad
        return masks

    def _no_class(self, L: int) -> list[bool]:
        have = set(self.gk_idx)
        return [i not in have for i in range(L)]

    def _reduce_alive(self, alive: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        # One all-reduce for every layer: a unit is alive if it is alive on any rank.
        flat = torch.cat([a.float() for a in alive]) if alive else torch.zeros(0, device=device)
        rdist.all_reduce_sum(flat)
        return list((flat > 0).split([a.numel() for a in alive]))

    def _dead_units(self, views: dict[str, torch.Tensor], idx: list[int], alive: list[torch.Tensor],
                    device: torch.device) -> dict[str, np.ndarray]:
        masks: dict[str, np.ndarray] = {}
        where = self._const(idx, torch.long, device)
        if ACT_DEAD_UNITS in views:
            frac = torch.stack([1.0 - a.float().mean() for a in alive])
            views[ACT_DEAD_UNITS].index_copy_(0, where, frac.to(views[ACT_DEAD_UNITS].dtype))
            masks[ACT_DEAD_UNITS] = _mask(self.num_layers, idx)
        if ACT_DEAD_UNITS_RUN in views:
            run = []
            for i, a in zip(idx, alive):
                before = self.run_dead.get(i)
                # a layer whose unit count changed starts over (another input shape)
                dead = ~a if before is None or before.shape != a.shape else before & ~a
                self.run_dead[i] = dead
                run.append(dead.float().mean())
            views[ACT_DEAD_UNITS_RUN].index_copy_(0, where, torch.stack(run).to(views[ACT_DEAD_UNITS_RUN].dtype))
            masks[ACT_DEAD_UNITS_RUN] = _mask(self.num_layers, idx)
        return masks


def _pair_mean(total: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean over pairs; NaN without a pair (the total is then a rounding residue, not 0)."""
    return torch.where(pairs > 0, total / pairs.clamp_min(1), torch.full_like(total, float("nan")))


def _mask(L: int, idx: list[int]) -> np.ndarray:
    m = np.zeros(L, dtype=bool)
    m[idx] = True
    return m
