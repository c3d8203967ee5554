"""The training loop's rows between flushes, and the flush that writes them to the run store.

The per-step scalars stay on the device until a flush copies them to the host in one go (the
loop's only other host sync is the finiteness check of each step). A run keeps whole steps
only: rows of a step that Ctrl-C cut short are dropped, and ``meta.json`` never claims more
steps than its parts hold.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import torch

from gradlab.common import metrics as M
from gradlab.recorder import GradientRecorder
from gradlab.store import RunWriter, interrupts_deferred

#: Per-step scalars kept on the device and copied to the host once per flush, in this order.
STEP_FIELDS: tuple[str, ...] = M.TRAINER_STEP_METRICS


class StepLog:
    """What a run recorded since its last flush, and how far it is complete.

    ``writer`` None (a rank other than 0) drains the recorder at each flush and writes nothing.
    """

    def __init__(self, recorder: GradientRecorder, writer: RunWriter | None, started: float) -> None:
        self.recorder, self.writer, self.started = recorder, writer, started
        self.pending: list[torch.Tensor] = []  # per-step scalars (STEP_FIELDS), still on the device
        self.pending_steps: list[int] = []
        self.host_rows: list[tuple[int, str, float]] = []  # lr, eval and skip rows
        self.nonfinite_steps = 0
        self.skipped_steps = 0
        # The recorder names the first non-finite layer on recorded steps; on other steps the
        # trainer still knows the step, so the run keeps where the explosion began.
        self.first_bad: dict[str, Any] = {}
        self.complete = -1  # the last step whose rows are all there (its evaluation included)

    def add_scalars(self, step: int, scalars: torch.Tensor) -> None:
        """The step's :data:`STEP_FIELDS`, as one device tensor."""
        self.pending.append(scalars)
        self.pending_steps.append(step)

    def add(self, step: int, name: str, value: float) -> None:
        """One host-side value of the step (learning rate, evaluation, skip flag)."""
        self.host_rows.append((step, name, value))

    def nonfinite(self, step: int) -> None:
        """Count a non-finite step and keep the first one."""
        self.nonfinite_steps += 1
        self.first_bad.setdefault("step", step)
        self.first_bad.setdefault("layer", None)

    def flush(self) -> None:
        """Write the whole steps recorded since the last flush, and refresh the meta."""
        if self.writer is None:
            self.recorder.pop_frame()
            self.recorder.pop_step_frame()
            self._clear()
            return
        # Ctrl-C waits for the flush to end, so the flush of an interrupted run finds nothing
        # pending twice; meta.json (steps_done) is written after the parts.
        with interrupts_deferred():
            rows = [row for row in self.host_rows if row[0] <= self.complete] + self._device_rows()
            self._clear()
            frame = pd.DataFrame(rows, columns=["step", "metric", "value"])
            recorded = self._whole_steps(self.recorder.pop_step_frame())
            self.writer.append_steps(pd.concat([frame, recorded], ignore_index=True))
            self.writer.append_layers(self._whole_steps(self.recorder.pop_frame()))
            self.writer.flush(
                layers=self.recorder.layer_table(),
                nonfinite_first=self._first_nonfinite(),
                steps_done=self.complete + 1,
                nonfinite_steps=self.nonfinite_steps,
                skipped_steps=self.skipped_steps,
                wall_time_s=round(time.time() - self.started, 3),
            )

    def _device_rows(self) -> list[tuple[int, str, float]]:
        if not self.pending:
            return []
        values = torch.stack(self.pending).float().cpu().tolist()
        return [(s, name, v) for s, vals in zip(self.pending_steps, values) if s <= self.complete
                for name, v in zip(STEP_FIELDS, vals)]

    def _first_nonfinite(self) -> dict[str, Any] | None:
        # The recorder's is exact at every recorded step; the trainer's also sees a non-finite loss.
        found = (f for f in (self.recorder.nonfinite_first, self.first_bad or None) if f)
        return min(found, key=lambda f: f["step"], default=None)

    def _whole_steps(self, frame: pd.DataFrame) -> pd.DataFrame:
        # Rows of a step that Ctrl-C cut short are dropped: a run keeps whole steps only.
        return frame[frame["step"] <= self.complete] if len(frame) else frame

    def _clear(self) -> None:
        self.pending.clear()
        self.pending_steps.clear()
        self.host_rows.clear()
