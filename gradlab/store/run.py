"""A run as read back: its meta and its two long tables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.store.layout import empty_frame
from gradlab.store.legacy import rename_legacy_metrics
from gradlab.store.liveness import effective_status
from gradlab.store.meta import read_meta
from gradlab.store.tables import read_table


class MetaView:
    """Properties shared by full runs and cheap listing entries."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or Path(self.path).name)

    @property
    def status(self) -> str:
        return effective_status(self.meta)

    @property
    def run_id(self) -> str | None:
        value = self.meta.get("run_id")
        return str(value) if value is not None else None


@dataclass
class Run(MetaView):
    """One stored run: its settings and status (``meta``) and its two long tables.

    ``layers`` has columns step (int64), layer (category), depth (int32), metric (category),
    value (float64); ``steps`` has step, metric, value. Both are sorted by step.
    ``status`` reads ``stopped`` for a run whose writer was killed (see
    :func:`effective_status`).
    """

    path: Path
    meta: dict[str, Any]
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_run(path: str | os.PathLike[str], *, layers: bool = True) -> Run:
    """Read a run directory: meta.json and every finished part of both tables.

    The tables are concatenated in the order the parts were written and sorted by step.
    Half-written temporary files are ignored. A ``running`` run whose writer process is
    gone from this host reads as ``stopped`` (``meta["status"]`` says so too, and
    ``meta["recorded_status"]`` keeps what the file says). ``layers=False`` skips the
    per-layer table (it is then empty), for listings that need only the steps.

    Raises :class:`GradlabError` naming the path for a missing directory, a directory that
    is not a run, or an unreadable meta.json or part file.
    """
    run_dir = Path(path)
    meta = read_meta(run_dir)
    status = effective_status(meta)
    if status != meta.get("status"):
        meta["recorded_status"] = meta.get("status")
        meta["status"] = status
    layer_frame = rename_legacy_metrics(read_table(run_dir, "layers")) if layers else empty_frame("layers")
    return Run(path=run_dir, meta=meta, layers=layer_frame, steps=read_table(run_dir, "steps"))
