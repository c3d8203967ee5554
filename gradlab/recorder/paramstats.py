"""Per-layer parameter metrics on the device: gradient norms, weight norms, update ratios and
non-finite counts, from a handful of foreach kernels per recorded step.

Per-parameter sums of squares come from one foreach reduction over all tensors (see
reduce.py); a layer's value is the ``index_add_`` of its parameters' entries (a shared
parameter counts once in every layer that owns it, and once in the total). Nothing here
reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gradlab.recorder import dist as rdist
from gradlab.recorder.layers import Layer
from gradlab.recorder.metrics import GRAD_NONFINITE, GRAD_NORM, TOTAL_GRAD_NORM, UPDATE_RATIO, WEIGHT_NORM
from gradlab.recorder.reduce import chunks_of, host_to_device, nonfinite_counts, sumsq_vector


def _dense(g: torch.Tensor) -> torch.Tensor:
    # A sparse gradient's norm is the norm of its coalesced values.
    return g.coalesce().values() if g.is_sparse else g


@dataclass
class _GradPlan:
    """How to reduce this step's gradients, for one pattern of which ones exist (cached)."""

    present: list[int]  # indices into ParamStats.params
    pair_pos: torch.Tensor  # positions into the present list, one per (parameter, layer) pair
    pair_layer: torch.Tensor
    layer_mask: np.ndarray  # bool per layer: it has at least one gradient this step
    layer_mask_t: torch.Tensor  # the same, on the device
    sharded: torch.Tensor | None  # bool per present position: a DTensor shard
    chunks: list[list[int]]
    convert: bool  # some gradient is sparse or a DTensor: take its values / local shard


class ParamStats:
    """Computes the selected parameter metrics into per-metric views of a buffer row."""

    def __init__(self, layers: Sequence[Layer], all_params: Sequence[torch.nn.Parameter],
                 metrics: Sequence[str], device: torch.device) -> None:
        self.num_layers = len(layers)
        self.device = device
        self.want_grad = GRAD_NORM in metrics or TOTAL_GRAD_NORM in metrics
        self.want_nonfinite = GRAD_NONFINITE in metrics
        self.want_weight = WEIGHT_NORM in metrics or UPDATE_RATIO in metrics
        self.want_update = UPDATE_RATIO in metrics
        self.metrics = set(metrics)

        self.params = list(all_params)
        index = {id(p): i for i, p in enumerate(self.params)}
        pairs = [(index[id(p)], layer.index) for layer in layers for p in layer.params if id(p) in index]
        self._pairs = pairs
        self.layer_has_params = np.zeros(self.num_layers, dtype=bool)
        for _, li in pairs:
            self.layer_has_params[li] = True
        self._groups = self._shard_groups()

        # Weight side: the parameters some layer covers, fixed for the recorder's life.
        covered = sorted({pi for pi, _ in pairs})
        pos = {pi: k for k, pi in enumerate(covered)}
        self.w_params = [self.params[pi] for pi in covered]
        self.w_pair_pos = host_to_device([pos[pi] for pi, _ in pairs], torch.long, device)
        self.w_pair_layer = host_to_device([li for _, li in pairs], torch.long, device)
        self.w_sharded = self._shard_mask(self.w_params)
        # Update side: only trainable parameters move; a frozen one adds 0 to the change.
        self.u_index = [k for k, p in enumerate(self.w_params) if p.requires_grad]
        upos = {k: j for j, k in enumerate(self.u_index)}
        u_pairs = [(upos[pos[pi]], li) for pi, li in pairs if pos[pi] in upos]
        self.u_pair_pos = host_to_device([a for a, _ in u_pairs], torch.long, device)
        self.u_pair_layer = host_to_device([b for _, b in u_pairs], torch.long, device)
        self.u_sharded = self._shard_mask([self.w_params[k] for k in self.u_index])
        self._snapshot: list[torch.Tensor] | None = None
        self._plans: dict[tuple[bool, ...], _GradPlan] = {}

    # -- distributed shards ---------------------------------------------------------------
    def _shard_groups(self) -> tuple:
        for p in self.params:
            groups = rdist.shard_groups(p)
            if groups:
                return groups
        return ()

    def _shard_mask(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
        if not self._groups:
            return None
        return host_to_device([rdist.is_dtensor(t) for t in tensors], torch.bool, self.device)

    def _sum_shards(self, vals: torch.Tensor, sharded: torch.Tensor | None) -> torch.Tensor:
        """vals: (k, n) per-tensor local sums; sharded tensors' entries become global sums."""
        if sharded is None:
            return vals
        red = vals * sharded
        for group in self._groups:
            rdist.all_reduce_sum(red, group)
        return torch.where(sharded, red, vals)

    # -- gradients ------------------------------------------------------------------------
    def _plan(self, key: tuple[bool, ...], grads: list[torch.Tensor]) -> _GradPlan:
        plan = self._plans.get(key)
        if plan is None:
            present = [i for i, missing in enumerate(key) if not missing]
            pos = {pi: k for k, pi in enumerate(present)}
            pairs = [(pos[pi], li) for pi, li in self._pairs if pi in pos]
            mask = np.zeros(self.num_layers, dtype=bool)
            for _, li in pairs:
                mask[li] = True
            dev = grads[0].device
            plan = _GradPlan(
                present=present,
                pair_pos=host_to_device([a for a, _ in pairs], torch.long, dev),
                pair_layer=host_to_device([b for _, b in pairs], torch.long, dev),
                layer_mask=mask,
                layer_mask_t=host_to_device(mask.tolist(), torch.bool, dev),
                sharded=self._shard_mask([self.params[i] for i in present]),
                chunks=chunks_of(grads),
                convert=any(g.is_sparse or rdist.is_dtensor(g) for g in grads),
            )
            if len(self._plans) > 64:  # patterns that keep changing: do not grow without bound
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _present_grads(self):
        """The gradients that exist this step (local, dense) and their layout plan; None when
        no parameter has a gradient."""
        all_grads = [p.grad for p in self.params]
        key = tuple(g is None for g in all_grads)
        if all(key):
            return None
        grads = [g for g in all_grads if g is not None]
        plan = self._plan(key, grads)
        if plan.convert:
            grads = [rdist.local(_dense(g)) for g in grads]
        return grads, plan

    def record_grads(self, views: dict[str, torch.Tensor], total: torch.Tensor | None) -> np.ndarray | None:
        """Writes grad_norm / grad_nonfinite / total_grad_norm; returns the per-layer validity mask.

        Returns None when no parameter has a gradient.
        """
        found = self._present_grads()
        if found is None:
            return None
        grads, plan = found
        rows = [sumsq_vector(grads)]
        if self.want_nonfinite:
            rows.append(nonfinite_counts(grads, plan.chunks, sumsq=rows[0]))
        vals = self._sum_shards(torch.stack(rows), plan.sharded)
        lay = vals.new_zeros(len(rows), self.num_layers)
        lay.index_add_(1, plan.pair_layer, vals.index_select(1, plan.pair_pos))
        self.last_layer_sumsq = (lay[0], plan.layer_mask_t)  # for the step's finiteness check
        if GRAD_NORM in views:
            torch.sqrt(lay[0], out=views[GRAD_NORM])
        if GRAD_NONFINITE in views:
            views[GRAD_NONFINITE].copy_(lay[1])
        if total is not None:
            torch.sqrt(vals[0].sum(), out=total)
        return plan.layer_mask

    def layer_grad_norms(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-layer gradient norms and the device mask of layers with a gradient, cheaply: one
        foreach norm (float32 accumulation is enough to tell finite from not), for the
        finiteness check of steps that are not recorded. None when no gradient exists."""
        found = self._present_grads()
        if found is None:
            return None
        grads, plan = found
        norms = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))
        lay = norms.new_zeros(self.num_layers).index_add_(0, plan.pair_layer, norms.index_select(0, plan.pair_pos))
        return lay, plan.layer_mask_t

    # -- weights and updates --------------------------------------------------------------
    def record_weights(self, views: dict[str, torch.Tensor]) -> bool:
        """Writes weight_norm and update_ratio; returns whether update_ratio is valid this step."""
        if not self.w_params:
            return False
        # Parameters go to the foreach kernels as they are (the caller runs under no_grad);
        # DTensors as their local shards.
        current = [rdist.local(p.detach()) for p in self.w_params] if self._groups else self.w_params
        w = self._sum_shards(sumsq_vector(current)[None], self.w_sharded)[0]
        wl = w.new_zeros(self.num_layers).index_add_(0, self.w_pair_layer, w.index_select(0, self.w_pair_pos))
        wnorm = torch.sqrt(wl)
        if WEIGHT_NORM in views:
            views[WEIGHT_NORM].copy_(wnorm)
        if not self.want_update or not self.u_index:
            return False
        moving = [current[k] for k in self.u_index]
        if self._snapshot is None:
            self._snapshot = [t.detach().clone() for t in moving]
            return False
        # snapshot <- previous - current, its norm, then snapshot <- current: no temporaries.
        torch._foreach_sub_(self._snapshot, moving)
        u = self._sum_shards(sumsq_vector(self._snapshot)[None], self.u_sharded)[0]
        torch._foreach_copy_(self._snapshot, moving)
        ul = u.new_zeros(self.num_layers).index_add_(0, self.u_pair_layer, u.index_select(0, self.u_pair_pos))
        torch.div(torch.sqrt(ul), wnorm, out=views[UPDATE_RATIO])
        return True

    def release(self) -> None:
        self._snapshot = None
        self._plans.clear()
