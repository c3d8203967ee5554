"""A Lightning callback that records gradient flow and writes a gradlab run directory.

>>> trainer = lightning.Trainer(callbacks=[GradlabCallback("runs/my-model")])   # doctest: +SKIP

It records in ``on_before_optimizer_step``: after the backward (after all accumulated
micro-batches, after a GradScaler has unscaled the gradients) and before Lightning clips them,
so the norms are the true, unclipped ones. Only the global-zero process writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gradlab.errors import GradlabError
from gradlab.integrations._common import RecorderSettings, labels_in
from gradlab.integrations.run import RunSink
from gradlab.report import report_from_dirs

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise GradlabError(
        f"gradlab.integrations.lightning needs Lightning ({exc}): pip install 'gradlab[lightning]'"
    ) from None


class GradlabCallback(pl.Callback):
    """Records the LightningModule's gradient flow and writes it to ``out`` as a run directory.

    Args:
        out: the run directory (``gradlab report out -o report.html`` reads it).
        every: record every n-th optimizer step, or a callable ``step -> bool``.
        metrics: None (default set), "all", or a list of metric names.
        layers: the recorder's ``layers=`` selection.
        flush_every: optimizer steps between writes, so a run that dies keeps what it recorded.
        report: also write an HTML report here when training ends.
        overwrite: replace a finished run at ``out``.
        meta: extra fields for the run's meta.
    """

    def __init__(self, out: str | os.PathLike[str] = "runs/gradlab", *, every: int | Callable[[int], bool] = 10,
                 metrics: Any = None, layers: Any = None, flush_every: int = 100,
                 report: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.settings = RecorderSettings(out, every, metrics, layers, flush_every, report, overwrite, meta or {})
        self.recorder = None
        self.sink: RunSink | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.recorder = self.settings.recorder(pl_module)  # every rank: DDP reduces activation sums
        if trainer.is_global_zero:
            meta = {"framework": "lightning", "spec": {"model": type(pl_module).__name__,
                                                       "gradient_clip_val": trainer.gradient_clip_val,
                                                       "accumulate_grad_batches": trainer.accumulate_grad_batches,
                                                       "precision": str(trainer.precision)},
                    **self.settings.meta}
            self.sink = RunSink(self.recorder, self.settings.path, meta=meta, overwrite=self.settings.overwrite)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        labels = labels_in(batch)
        if self.recorder is not None and labels is not None:
            self.recorder.set_labels(labels)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        rec = self.recorder
        if rec is None:
            return
        rec.step()  # before clipping: Lightning clips right after this hook
        if self.sink is not None and rec.current_step % self.settings.flush_every == 0:
            self.sink.flush()

    def _finish(self, status: str, error: str | None = None) -> None:
        if self.sink is not None:
            self.sink.close(status, error=error)
            if status == "finished" and self.settings.report is not None:
                report_from_dirs([self.settings.path], self.settings.report)
        if self.recorder is not None:
            self.recorder.remove()
        self.sink, self.recorder = None, None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish("stopped" if trainer.interrupted else "finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._finish("stopped", error="interrupted")
        else:
            self._finish("failed", error=f"{type(exception).__name__}: {exception}")

    @property
    def run_dir(self) -> str:
        """The run directory this callback writes."""
        return str(self.settings.path)
