"""GradientRecorder: per-layer gradient-flow metrics from any training loop."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradlab.errors import GradlabError
from gradlab.recorder import dist as rdist
from gradlab.recorder.activations import ForwardTap
from gradlab.recorder.arguments import check_capacity, check_model, check_scaler
from gradlab.recorder.buffer import Chunk, RecordBuffer, split_rows
from gradlab.recorder.finite import FiniteWatch
from gradlab.recorder.frames import layer_frame, step_frame
from gradlab.recorder.layers import Layer, LayerSelection, select_layers, unwrap
from gradlab.recorder.metrics import (
    ACTIVATION_METRICS,
    DEFAULT_SATURATION_THRESHOLD,
    GRAD_NONFINITE,
    GRAD_NORM,
    LAYER_METRICS,
    PARAM_METRICS,
    SKIPPED,
    UPDATE_RATIO,
    WEIGHT_NORM,
    check_saturation_threshold,
    parse_metrics,
)
from gradlab.recorder.optimizers import closure_of, resolve_optimizer
from gradlab.recorder.paramstats import ParamStats
from gradlab.recorder.rowlayout import STEP_NAMES, RowLayout
from gradlab.recorder.schedule import schedule

_DEFAULT_CAPACITY = 64


class GradientRecorder:
    """Records per-layer gradient-flow metrics of ``model`` at the steps ``every`` selects.

    Use it in any loop: call :meth:`step` after ``loss.backward()`` (and after
    ``scaler.unscale_(optimizer)`` with AMP) and before ``optimizer.step()``; or pass
    ``optimizer=`` and it records from the optimizer's step pre-hook by itself. Read the
    records with :meth:`to_frame` / :meth:`step_frame`, or drain them with :meth:`pop_frame` /
    :meth:`pop_step_frame`. :meth:`remove` (or leaving the ``with`` block) takes every hook off.

    Args:
        model: the ``nn.Module`` (DDP / torch.compile wrappers are looked through).
        optimizer: record from this optimizer's step pre-hook instead of explicit ``step()`` calls.
        every: record every n-th step (int > 0), or a callable ``step -> bool``.
        metrics: None (grad_norm, weight_norm, total_grad_norm), "all", or a
            list of names from :data:`gradlab.recorder.ALL_METRICS`.
        layers: None for the default layers (modules owning parameters, activation and
            normalisation modules), or module names, a module type or tuple of types, or a
            predicate ``(name, module) -> bool``.
        saturation_threshold: a sigmoid/tanh output counts as saturated where the derivative is
            below this fraction of its maximum.
        capacity: recorded steps held in the device buffer before one batched copy to the host.
        scaler: the ``torch.amp.GradScaler`` of the loop, if any. Parameter gradients are read
            after unscaling anyway; act_grad_norm is taken during backward, on scaled
            gradients, and is divided by this scaler's current scale. With ``optimizer=``, the
            recorder also wraps this scaler's ``unscale_`` (until :meth:`remove`) so that the
            steps the scaler skips for inf/NaN are checked too (see :attr:`nonfinite_first`).

    Batch labels: for ``act_grad_cos_class`` call :meth:`set_labels` with the batch's labels
    before each forward.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        every: int | Callable[[int], bool] = 1,
        metrics: str | Iterable[str] | None = None,
        layers: LayerSelection = None,
        saturation_threshold: float = DEFAULT_SATURATION_THRESHOLD,
        capacity: int = _DEFAULT_CAPACITY,
        scaler: Any = None,
    ) -> None:
        check_model(model)
        if optimizer is not None:
            optimizer = resolve_optimizer(optimizer)  # Accelerate's and Lightning's wrappers
        check_capacity(capacity)
        self._schedule = schedule(every)
        self.metrics: tuple[str, ...] = parse_metrics(metrics)
        self._threshold = check_saturation_threshold(saturation_threshold)
        self._capacity = int(capacity)
        self._root = unwrap(model)
        self.layers: list[Layer] = select_layers(self._root, layers)
        self._ranks = rdist.current_ranks()
        self._optimizer = optimizer
        check_scaler(scaler)
        self._scaler = scaler

        self._want_params = bool(set(self.metrics) & PARAM_METRICS)
        self._watch: FiniteWatch | None = None  # every step's finiteness, made at the first step
        self._checked_step = -1  # the step whose finiteness was already checked (scaler's unscale_)
        self._recorded_step = -1  # the last step recorded
        self._skip_first: dict[str, Any] | None = None  # first step the GradScaler skipped
        self._want_acts = bool(set(self.metrics) & ACTIVATION_METRICS)
        self._layout()

        self._tap: ForwardTap = ForwardTap(self.layers, self.metrics, self._threshold, self._ranks, root=self._root)
        self._params: ParamStats | None = None
        self._buf: RecordBuffer | None = None
        self._layer_chunks: list[Chunk] = []
        self._step_chunks: list[Chunk] = []
        self._nonfinite_first: dict[str, Any] | None = None
        self._device: torch.device | None = None
        self._depth: np.ndarray = np.arange(len(self.layers), dtype=np.int64)
        self._ready = False  # layout finalised at the first step (device, depth, parameters)
        self._grads_seen = False
        self._removed = False
        self._step = 0
        self._handles: list[Any] = []
        self._backward_since_step = False
        self._in_closure_step = False  # inside optimizer.step(closure): no skip detection
        self._warned_no_acts = False

        self._next = self._schedule(0)
        self._last_grads: list[tuple[Any, int]] | None = None  # which gradients the last step saw
        self._attach(optimizer)

    def _attach(self, optimizer: torch.optim.Optimizer | None) -> None:
        try:
            self._tap.attach()  # the first forward teaches the depth order
            self._tap.arm(self._next)
            if optimizer is not None:
                self._handles.append(optimizer.register_step_pre_hook(self._on_optimizer_step))
                self._handles.append(optimizer.register_step_post_hook(self._after_optimizer_step))
                self._watch_skips()
                self._wrap_unscale()
        except BaseException:
            # nothing stays attached unless construction succeeds: the caller has no object to
            # call remove() on
            self.remove()
            raise

    # -- layout of a buffer row -------------------------------------------------------------
    def _layout(self) -> None:
        self._row = row = RowLayout.of(self.metrics, len(self.layers))
        self._blocks, self._layer_width, self._total_col = row.blocks, row.layer_width, row.total_col
        self._width, self._col_layer, self._col_metric = row.width, row.col_layer, row.col_metric
        self._step_col_metric, self._skip_col = row.step_col_metric, row.skip_col

    def _finalise(self) -> None:
        """At the first step: depth from the forward order, parameters and device fixed."""
        order = self._tap.finish_discovery()
        self._depth = np.empty(len(self.layers), dtype=np.int64)
        self._depth[order] = np.arange(len(order))
        for layer in self.layers:
            layer.depth = int(self._depth[layer.index])
            # Read again: fully_shard or .to() may have replaced parameters since construction.
            layer.params = list(layer.module.parameters(recurse=layer.recurse))
            layer.num_params = sum(p.numel() for p in layer.params)
        all_params = list(self._root.parameters())
        self._all_params = all_params
        first = next((p for p in all_params if p.grad is not None), None)
        if first is None:
            first = next(iter(all_params), None)
        self._device = rdist.local(first).device if first is not None else torch.device("cpu")
        if all_params:
            # also without parameter metrics: every step's finiteness check reads the gradients
            self._params = ParamStats(self.layers, all_params, self.metrics, self._device)
            self._watch = FiniteWatch(len(self.layers), self._device)
        self._buf = RecordBuffer(self._width, self._capacity, self._device, self._ranks.keeps_records,
                                 self._on_rows)
        self._ready = True

    # -- stepping ---------------------------------------------------------------------------
    @property
    def current_step(self) -> int:
        """Index of the next optimizer step (0 before the first)."""
        return self._step

    def step(self) -> bool:
        """Records the current optimizer step if the schedule says so, then advances the counter.

        Call it after ``backward()`` (after ``scaler.unscale_`` with AMP) and before
        ``optimizer.step()``, once per optimizer step. Returns whether this step was recorded.
        A second call without a backward in between raises ``GradlabError`` (it would label
        the same gradients as another step).
        """
        if self._removed:
            raise GradlabError("this recorder was removed: create a new GradientRecorder to record again")
        if self._optimizer is not None:
            raise GradlabError(
                "this recorder records from optimizer.step() itself (optimizer= was given): "
                "remove the rec.step() call, or create the recorder without optimizer="
            )
        self._check_new_backward()
        return self._advance()

    def _check_new_backward(self) -> None:
        """Refuses a second step() without a backward in between: it would record the same
        gradients as another step. Seen from the gradients themselves (a new tensor, or one
        accumulated into in place), so it costs one pass over the parameter list."""
        last = self._last_grads
        if not self._ready or last is None:
            return
        for p, (ref, version) in zip(self._all_params, last):
            g = p.grad
            if g is None:
                if ref is not None:
                    return
            elif ref is None or ref() is not g or g._version != version:
                return  # a new gradient, or one accumulated into in place: a backward ran
        if any(ref is not None for ref, _ in last):
            raise GradlabError(
                "step() was called again without a backward() since the last step: call rec.step() "
                "once per optimizer step, after loss.backward()"
            )

    def _note_grads(self) -> None:
        # Weak references, not ids: an id can be reused once a gradient is freed. The first
        # parameter with a changed gradient ends the check, so it costs little in a normal loop.
        self._last_grads = [(None, 0) if g is None else (weakref.ref(g), g._version)
                            for g in (p.grad for p in self._all_params)]

    def _on_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        if self._removed:
            return None
        closure, as_keyword = closure_of(args, kwargs)
        if closure is None:
            self._advance()
            return None
        # step(closure): the backward runs inside the closure, after this hook. Record right
        # after the closure's first call (LBFGS calls it again for its line search; the first
        # call gives the step's gradient, accumulated micro-batches included).
        done = [False]
        self._in_closure_step = True  # forwards and backwards until the post-hook are this step's

        def recorded_closure():
            loss = closure()
            if not done[0] and not self._removed:
                done[0] = True
                self._advance()
            return loss

        if as_keyword:
            return args, {**kwargs, "closure": recorded_closure}
        return (args[0], recorded_closure, *args[2:]), kwargs

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # backward passes inside a closure (LBFGS re-evaluations) belong to this step: the next
        # step's cleared gradients are not a skipped step
        self._in_closure_step = False
        self._backward_since_step = False

    def _advance(self) -> bool:
        s = self._step
        if not self._grads_seen:
            params = self._all_params if self._ready else list(self._root.parameters())
            if not any(p.grad is not None for p in params):
                raise GradlabError(
                    "step() was called before any backward(): call loss.backward() first, "
                    "then rec.step(), then optimizer.step()"
                )
            self._grads_seen = True
        if not self._ready:
            self._finalise()
        recorded = self._next
        if recorded:
            self._recorded_step = s
            self._record(s)
        else:
            self._tap.discard()
        self._check_finite(s)
        if self._optimizer is None:
            self._note_grads()
        self._move_to(s + 1)
        return recorded

    def _check_finite(self, step: int) -> None:
        """This step's per-layer gradient norms: finite or not, kept on the device (no sync)."""
        ps = self._params
        last = getattr(ps, "last_layer_sumsq", None)
        if ps is not None:
            ps.last_layer_sumsq = None
        if self._watch is None or self._checked_step == step:
            return
        self._checked_step = step
        if step == self._recorded_step and GRAD_NORM in self.metrics:
            return  # its grad_norm rows are scanned on the host: no device work needed
        found = last if last is not None else ps.layer_grad_norms()
        if found is not None:
            with torch.no_grad():
                self._watch.update(step, *found)

    def _move_to(self, step: int) -> None:
        self._step = step
        self._next = self._schedule(step)
        self._tap.arm(self._next)
        self._tap.labels = None  # labels belong to one step's batch
        self._backward_since_step = False

    def set_labels(self, labels: torch.Tensor) -> None:
        """Hands over the labels of the batch about to go through the forward (for
        ``act_grad_cos_class``, the cosine of dL/dh over pairs of examples with the same label).

        Call it before each forward, with one integer label per example (dim 0 of the layer
        outputs); they hold until the step is recorded or skipped. Without labels,
        ``act_grad_cos_class`` is NaN. Cheap: the labels stay on their device.
        """
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point() \
                or labels.is_complex():
            got = (f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                   else type(labels).__name__)
            raise GradlabError(
                f"set_labels needs a 1-d integer tensor of class labels, got {got}: pass the "
                "batch's targets, e.g. rec.set_labels(y)"
            )
        self._tap.labels = labels.detach()

    def _record(self, step: int) -> None:
        buf = self._buf
        row = buf.row()
        views = {m: row[sl] for m, sl in self._blocks.items()}
        total = row[self._total_col] if self._total_col is not None else None
        L = len(self.layers)
        masks: dict[str, np.ndarray] = {}
        has_total = False
        with torch.no_grad():
            if self._params is not None:
                ps = self._params
                if GRAD_NORM in views or GRAD_NONFINITE in views or total is not None:
                    gmask = ps.record_grads(views, total)
                    if gmask is not None:
                        masks[GRAD_NORM] = masks[GRAD_NONFINITE] = gmask
                        has_total = True
                if ps.want_weight:
                    update_ok = ps.record_weights(views)
                    masks[WEIGHT_NORM] = ps.layer_has_params
                    if update_ok:
                        masks[UPDATE_RATIO] = ps.layer_has_params
            if self._want_acts:
                if not self._warned_no_acts and not self._tap.staged_any():
                    self._warn_no_activations(step)
                masks.update(self._tap.finalize(views, self._device, self._grad_scale()))
        if not buf.keep:
            buf.commit(step, None)
            return
        valid = np.zeros(self._width, dtype=bool)
        none = np.zeros(L, dtype=bool)
        for m, sl in self._blocks.items():
            valid[sl] = masks.get(m, none)
        if self._total_col is not None:
            valid[self._total_col] = has_total
        buf.commit(step, valid)

    def _warn_no_activations(self, step: int) -> None:
        # Silent gaps are the worst outcome for a diagnostics tool: say it once, with the fix.
        # The usual cause: dynamo does not guard on module hooks by default, so a graph traced
        # before the hooks existed (or for another instance of the same class) keeps running
        # without them.
        self._warned_no_acts = True
        warnings.warn(
            f"gradlab: step {step} was recorded, but none of the recorder's forward hooks ran, "
            "so it has no activation metrics. If the model is torch.compile'd, a graph traced "
            "without the hooks is being reused: set torch._dynamo.config."
            "skip_nnmodule_hook_guards = False before the first compiled forward (or call "
            "torch._dynamo.reset() after creating the recorder). Otherwise check that the "
            "forward runs between rec.step() calls with gradients enabled (a forward under "
            "torch.no_grad() is not measured).",
            RuntimeWarning,
            stacklevel=5,  # the caller of rec.step()
        )

    def _grad_scale(self) -> torch.Tensor | float | None:
        """The GradScaler's current loss scale, as a device tensor when it has one (no sync)."""
        scaler = self._scaler
        if scaler is None or not scaler.is_enabled():
            return None
        scale = getattr(scaler, "_scale", None)
        return scale if isinstance(scale, torch.Tensor) else float(scaler.get_scale())

    # -- skipped steps (optimizer mode) -----------------------------------------------------
    def _watch_skips(self) -> None:
        """GradScaler skips optimizer.step() on non-finite gradients, so the pre-hook never runs.

        A skipped step shows as gradients cleared (``zero_grad(set_to_none=True)``) after a
        backward, with no optimizer step in between. That is seen at the next forward (if the
        loop clears gradients before it) or at the next backward's first gradient (if it clears
        them after the forward). Loops that zero gradients in place are not detected.
        """
        probe = next((p for p in self._root.parameters() if p.requires_grad), None)
        if probe is None or not hasattr(probe, "register_post_accumulate_grad_hook"):
            return
        self._probe = probe
        self._probe_grad: weakref.ref | None = None
        self._handles.append(probe.register_post_accumulate_grad_hook(self._on_probe_grad))
        self._handles.append(self._root.register_forward_pre_hook(self._on_root_forward))

    def _on_probe_grad(self, p: torch.Tensor) -> None:
        if self._in_closure_step:
            return
        last = self._probe_grad() if self._probe_grad is not None else None
        if self._backward_since_step and last is not p.grad and not self._removed:
            # Cleared and refilled without an optimizer step: keep what the current step's
            # forward passes staged, drop the skipped step's.
            self._skipped(keep_since_forward=True)
        self._probe_grad = weakref.ref(p.grad) if p.grad is not None else None
        self._backward_since_step = True

    def _on_root_forward(self, module: nn.Module, args: Any) -> None:
        if torch.compiler.is_compiling() or self._removed:
            return None
        if self._backward_since_step and self._probe.grad is None and not self._in_closure_step:
            self._skipped(keep_since_forward=False)
        self._tap.mark()
        return None

    def _wrap_unscale(self) -> None:
        """GradScaler.step unscales, then skips the optimizer step on inf/NaN: the pre-hook never
        sees that step, so its finiteness is checked right after unscaling instead."""
        scaler = self._scaler
        if scaler is None or not hasattr(scaler, "unscale_"):
            return
        original = scaler.unscale_

        def unscale_(optimizer: Any) -> None:
            original(optimizer)
            if optimizer is self._optimizer and not self._removed:
                if not self._ready:
                    self._finalise()
                self._check_finite(self._step)

        scaler.unscale_ = unscale_

        class _Restore:
            def remove(self_inner) -> None:
                if scaler.__dict__.get("unscale_") is unscale_:
                    del scaler.unscale_

        self._handles.append(_Restore())

    def _skipped(self, keep_since_forward: bool) -> None:
        s = self._step
        if self._skip_first is None:
            # the GradScaler skips a step only for inf/NaN gradients
            self._skip_first = {"step": s, "layer": None, "metric": SKIPPED}
        if self._ranks.keeps_records:
            self._step_chunks.append(
                Chunk(np.array([s], np.int64), np.array([self._skip_col], np.int64),
                      np.ones((1, 1), np.float32))
            )
        armed = self._tap.armed
        self._move_to(s + 1)
        if keep_since_forward and armed and self._tap.armed:
            self._tap.discard_before_mark()
        else:
            self._tap.discard()

    # -- host side --------------------------------------------------------------------------
    def _on_rows(self, steps: np.ndarray, mask: np.ndarray, values: np.ndarray) -> None:
        layer_chunks = split_rows(steps, mask, values, 0, self._layer_width)
        self._layer_chunks.extend(layer_chunks)
        if self._total_col is not None:
            self._step_chunks.extend(split_rows(steps, mask, values, self._layer_width, self._width))
        if self._nonfinite_first is None:
            for ch in layer_chunks:
                self._scan_nonfinite(ch)

    def _scan_nonfinite(self, ch: Chunk) -> None:
        found = self._row.first_nonfinite(ch, self._depth)
        if found is not None and (self._nonfinite_first is None or found["step"] < self._nonfinite_first["step"]):
            self._nonfinite_first = found

    def _sync(self) -> None:
        if self._buf is not None:
            self._buf.sync()

    def _layer_frame(self, chunks: list[Chunk]) -> pd.DataFrame:
        return layer_frame(chunks, self._col_layer, self._col_metric, [layer.name for layer in self.layers],
                           self._depth, LAYER_METRICS)

    def to_frame(self) -> pd.DataFrame:
        """All per-layer records kept so far: columns step, layer, depth, metric, value.

        Records drained by :meth:`pop_frame` are no longer kept: after a pop, this returns only
        what was recorded since. Use one of the two styles per recorder."""
        self._sync()
        return self._layer_frame(self._layer_chunks)

    def pop_frame(self) -> pd.DataFrame:
        """The per-layer records since the last pop, which are then forgotten (bounded memory)."""
        self._sync()
        chunks, self._layer_chunks = self._layer_chunks, []
        return self._layer_frame(chunks)

    def step_frame(self) -> pd.DataFrame:
        """All per-step records kept so far (not those drained by :meth:`pop_step_frame`):
        columns step, metric, value."""
        self._sync()
        return step_frame(self._step_chunks, self._step_col_metric, STEP_NAMES)

    def pop_step_frame(self) -> pd.DataFrame:
        """The per-step records since the last pop, which are then forgotten."""
        self._sync()
        chunks, self._step_chunks = self._step_chunks, []
        return step_frame(chunks, self._step_col_metric, STEP_NAMES)

    def layer_table(self) -> list[dict[str, Any]]:
        """``[{name, depth, type, num_params}]`` of the recorded layers, in depth order."""
        rows = [
            {"name": layer.name, "depth": int(self._depth[layer.index]), "type": layer.type,
             "num_params": int(layer.num_params)}
            for layer in self.layers
        ]
        return sorted(rows, key=lambda r: r["depth"])

    @property
    def nonfinite_first(self) -> dict[str, Any] | None:
        """``{"step": int, "layer": str | None, "metric": str}`` of the first step with a NaN/inf
        gradient, or None. Reads the device (a sync): ask at flush time, not every step.

        The step is exact whether or not it was recorded: every step's per-layer gradient norms
        are checked for finiteness on the device (see finite.py), including steps that
        ``on_nonfinite`` logic later skips and, with ``optimizer=`` and ``scaler=``, the steps the
        GradScaler skips. The layer is the non-finite one nearest the loss (deepest in forward
        order), which the backward pass reached first. ``metric`` says what showed it:
        ``grad_norm`` (any step); on recorded steps also ``act_grad_norm`` or
        ``grad_nonfinite``; ``skipped`` (layer None) for a step the GradScaler skipped when
        the recorder was not given that scaler.
        """
        self._sync()
        found: list[tuple[int, int, int | None, str]] = []  # (step, -depth, layer, metric)
        if self._nonfinite_first is not None:
            h = self._nonfinite_first
            found.append((h["step"], -int(self._depth[h["layer"]]), h["layer"], h["metric"]))
        first = self._watch.first() if self._watch is not None else None
        if first is not None:
            step, bad = first
            layers = np.flatnonzero(bad)
            deepest = int(layers[np.argmax(self._depth[layers])])
            found.append((step, -int(self._depth[deepest]), deepest, GRAD_NORM))
        if self._skip_first is not None:
            found.append((self._skip_first["step"], 1, None, SKIPPED))
        if not found:
            return None
        step, _, layer, metric = min(found, key=lambda f: (f[0], f[1]))
        return {"step": int(step), "layer": None if layer is None else self.layers[layer].name, "metric": metric}

    @property
    def host_bytes(self) -> int:
        """Host memory held by records not yet popped."""
        return sum(c.nbytes for c in self._layer_chunks) + sum(c.nbytes for c in self._step_chunks)

    @property
    def device_bytes(self) -> int:
        """Device memory of the row buffer (plus the parameter snapshot for update_ratio)."""
        n = self._buf.device_bytes if self._buf is not None else 0
        snap = self._params._snapshot if self._params is not None else None
        if snap:
            n += sum(t.numel() * t.element_size() for t in snap)
        return n

    # -- lifetime ---------------------------------------------------------------------------
    def remove(self) -> None:
        """Takes every hook off the model (and optimizer); safe to call more than once.

        Records stay readable afterwards.
        """
        if self._removed:
            return
        self._removed = True
        self._tap.remove()
        for h in self._handles:
            h.remove()
        self._handles = []
        self._sync()
        if self._params is not None:
            self._params.release()

    def __enter__(self) -> GradientRecorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else f"step {self._step}"
        return f"GradientRecorder({len(self.layers)} layers, metrics={list(self.metrics)}, {state})"
