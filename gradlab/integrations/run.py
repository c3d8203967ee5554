"""From a recorder to a run directory and a report, with what the diagnosis needs to know.

The diagnosis fits its advice to the model: it reads the layer types from the run's meta
(normalisation present? sigmoid/tanh? attention?). The recorder knows them, so they are written
with every run, together with a short description of the model (its class, parameter count,
and how many modules of each type it has).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from torch import nn

from gradlab.errors import GradlabError
from gradlab.recorder import GradientRecorder
from gradlab.recorder.layers import unwrap
from gradlab.report import report_from_dirs
from gradlab.store import RunWriter


def describe_model(model: nn.Module) -> dict[str, Any]:
    """``{"model": class name, "num_params": int, "module_types": {type: count}}`` of ``model``."""
    root = unwrap(model)
    counts = Counter(type(m).__name__ for m in root.modules())
    params = {id(p): p.numel() for p in root.parameters()}  # a tied parameter once
    return {"model": type(root).__name__, "num_params": int(sum(params.values())),
            "module_types": dict(sorted(counts.items()))}


def _check_recorder(recorder: Any) -> GradientRecorder:
    if not isinstance(recorder, GradientRecorder):
        raise GradlabError(
            f"expected a gradlab GradientRecorder, got {type(recorder).__name__}: "
            "pass the recorder that was attached to the model"
        )
    return recorder


class RunSink:
    """Writes a recorder's records to a run directory as training goes.

    Each :meth:`flush` drains the recorder (``pop_frame`` / ``pop_step_frame``) into one new
    part per table and refreshes the meta (layers with their types and depths, the first
    non-finite step, steps done); :meth:`close` flushes and marks the run finished (or the
    given status). Use it as a context manager: an exception marks the run failed, Ctrl-C
    stopped, and what was flushed stays readable.

    Args:
        recorder: the attached recorder.
        path: the run directory to create.
        meta: extra meta fields (e.g. ``{"spec": {...}}`` with the run's settings).
        overwrite: replace a finished run at ``path``.
    """

    def __init__(self, recorder: GradientRecorder, path: str | os.PathLike[str], *,
                 meta: dict[str, Any] | None = None, overwrite: bool = False) -> None:
        self.recorder = _check_recorder(recorder)
        self.started = time.time()
        info = describe_model(recorder._root)
        base: dict[str, Any] = {
            **info,
            "source": "recorder",
            "metrics": list(recorder.metrics),
            "layers": recorder.layer_table(),
        }
        base.update(meta or {})
        self.writer = RunWriter(path, base, overwrite=overwrite)
        self.path = Path(path)

    def flush(self) -> None:
        """Appends what was recorded since the last flush and refreshes the meta."""
        rec = self.recorder
        self.writer.append_layers(rec.pop_frame())
        self.writer.append_steps(rec.pop_step_frame())
        self.writer.update_meta(
            layers=rec.layer_table(),  # depths are known only after the first step
            nonfinite_first=rec.nonfinite_first,
            steps_done=rec.current_step,
            wall_time_s=round(time.time() - self.started, 3),
        )
        self.writer.flush()

    def close(self, status: str = "finished", error: str | None = None) -> Path:
        """Flushes and closes the run with ``status``; returns the run directory."""
        if not self.writer.closed:
            self.flush()
            self.writer.close(status, error=error)
        return self.path

    def __enter__(self) -> RunSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.close("stopped", error="interrupted")
        else:
            self.close("failed", error=f"{exc_type.__name__}: {exc}")


def save_run(recorder: GradientRecorder, path: str | os.PathLike[str], *,
             meta: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Writes every record the recorder still holds to a finished run directory at ``path``.

    The layer types, depths and a description of the model go into its meta, so that
    ``gradlab report`` and the diagnosis fit their advice to the model. Records already
    drained with ``pop_frame`` are not in it (use :class:`RunSink` to write as you go).
    """
    with RunSink(recorder, path, meta=meta, overwrite=overwrite) as sink:
        sink.flush()
    return Path(path)


def save_report(recorder: GradientRecorder, out: str | os.PathLike[str] = "gradlab-report.html", *,
                run_dir: str | os.PathLike[str] | None = None, meta: dict[str, Any] | None = None,
                overwrite: bool = False, title: str | None = None) -> Path:
    """From a recorder to an HTML report in one call; returns the report's path.

    The records are first written as a run directory (``run_dir``; by default beside the
    report, named after it with ``-run``), which ``gradlab report`` can read again later.
    """
    out = Path(out)
    if run_dir is None:
        run_dir = out.with_name(out.stem + "-run")
    save_run(recorder, run_dir, meta=meta, overwrite=overwrite)
    return report_from_dirs([run_dir], out, title=title)
