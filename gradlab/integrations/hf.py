"""A Hugging Face ``TrainerCallback`` that records gradient flow and writes a gradlab run directory.

>>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[GradlabTrainerCallback("runs/gpt2")])  # doctest: +SKIP

When it records. The Trainer clips right after the last micro-batch's backward and calls no
callback in between, so the recorder steps at the end of that backward pass itself (an
autograd callback queued from a gradient hook, run once the whole backward, accumulation
included, is done): the norms are the true, unclipped ones. The last micro-batch of an
optimizer step is the one Accelerate marks ``sync_gradients``. With fp16 mixed precision the
gradients are still multiplied by the loss scale there, so the recorder steps in
``on_pre_optimizer_step`` instead, after unscaling, which is after clipping too; the run's meta
says so (``recorded_after_clipping``). Only the main process writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from gradlab.errors import GradlabError
from gradlab.integrations._common import RecorderSettings, labels_in
from gradlab.integrations.run import RunSink
from gradlab.report import report_from_dirs

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise GradlabError(f"gradlab.integrations.hf needs transformers ({exc}): pip install 'gradlab[hf]'") from None


def _sync_step() -> bool:
    """Whether the backward running now is the last micro-batch of an optimizer step."""
    try:
        from accelerate.state import GradientState
    except ImportError:  # pragma: no cover - the Trainer needs Accelerate
        return True
    return bool(GradientState().sync_gradients)


def _fp16_scaled() -> bool:
    try:
        from accelerate.state import AcceleratorState
    except ImportError:  # pragma: no cover
        return False
    state = AcceleratorState()
    return str(getattr(state, "mixed_precision", "no")) == "fp16"


class GradlabTrainerCallback(TrainerCallback):
    """Records the model's gradient flow during ``Trainer.train()`` and writes it to ``out``.

    Args: as :class:`gradlab.integrations.lightning.GradlabCallback` (``out``, ``every``,
    ``metrics``, ``layers``, ``flush_every``, ``report``, ``overwrite``, ``meta``).
    Class labels, where the batch has 1-d integer ``labels`` (sequence classification), are
    handed to the recorder for ``act_grad_cos_class``.
    """

    def __init__(self, out: str | os.PathLike[str] = "runs/gradlab", *, every: int | Callable[[int], bool] = 10,
                 metrics: Any = None, layers: Any = None, flush_every: int = 100,
                 report: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 meta: dict[str, Any] | None = None) -> None:
        self.settings = RecorderSettings(out, every, metrics, layers, flush_every, report, overwrite, meta or {})
        self.recorder = None
        self.sink: RunSink | None = None
        self._handles: list[Any] = []
        self._queued = False
        self._after_clipping = False

    # -- lifetime ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        self.recorder = rec = self.settings.recorder(model)
        self._after_clipping = _fp16_scaled()
        if not self._after_clipping:
            probe = next((p for p in model.parameters() if p.requires_grad), None)
            if probe is not None:
                self._handles.append(probe.register_post_accumulate_grad_hook(self._on_grad))
        self._handles.append(model.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        if state.is_world_process_zero:
            spec = {"model": type(rec._root).__name__, "max_grad_norm": args.max_grad_norm,
                    "gradient_accumulation_steps": args.gradient_accumulation_steps,
                    "learning_rate": args.learning_rate, "fp16": bool(args.fp16), "bf16": bool(args.bf16)}
            meta = {"framework": "transformers", "spec": spec,
                    "recorded_after_clipping": self._after_clipping, **self.settings.meta}
            self.sink = RunSink(rec, self.settings.path, meta=meta, overwrite=self.settings.overwrite)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish("finished")

    def _finish(self, status: str) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.sink is not None:
            self.sink.close(status)
            if status == "finished" and self.settings.report is not None:
                report_from_dirs([self.settings.path], self.settings.report)
        if self.recorder is not None:
            self.recorder.remove()
        self.sink, self.recorder = None, None

    # -- per step ---------------------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, kwargs: dict) -> None:
        labels = labels_in(kwargs)
        if labels is not None and self.recorder is not None and torch.is_grad_enabled():
            self.recorder.set_labels(labels)

    def _on_grad(self, p: torch.Tensor) -> None:
        # once per backward pass: run when all of it (every gradient accumulated) is done
        if not self._queued and _sync_step():
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        self._queued = False
        self._step()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._after_clipping:
            self._step()

    def _step(self) -> None:
        rec = self.recorder
        if rec is None:
            return
        rec.step()
        if self.sink is not None and rec.current_step % self.settings.flush_every == 0:
            self.sink.flush()

    @property
    def run_dir(self) -> str:
        """The run directory this callback writes."""
        return str(self.settings.path)
