"""Finding the runs under a directory, reading only their meta."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradlab.errors import GradlabError
from gradlab.store.layout import META_FILE
from gradlab.store.liveness import effective_status
from gradlab.store.meta import read_meta
from gradlab.store.run import MetaView, Run, load_run


@dataclass
class RunEntry(MetaView):
    """A run found on disk, with its meta only (tables not read): what listings need.

    ``error`` is set, and ``meta`` empty, when the run's meta.json could not be read; such an
    entry's status is ``unreadable``.
    """

    path: Path
    meta: dict[str, Any]
    error: str | None = None

    @property
    def status(self) -> str:
        return "unreadable" if self.error else effective_status(self.meta)

    def load(self, *, layers: bool = True) -> Run:
        """Read the run with its tables (see :func:`load_run`)."""
        return load_run(self.path, layers=layers)


def find_runs(root: str | os.PathLike[str]) -> list[RunEntry]:
    """Every run directory under ``root`` (``root`` itself included), meta only.

    A directory holding a ``meta.json`` is a run; the search does not descend into runs nor
    into hidden directories. Entries are sorted by start time, then path. A run whose
    meta.json cannot be read is listed with ``error`` set. A missing root gives ``[]``.
    """
    root = Path(root)
    entries: list[RunEntry] = []
    if not root.is_dir():
        return entries
    for current, dirs, files in os.walk(root):
        if META_FILE in files:
            dirs[:] = []  # a run's own folders hold tables, not runs
            try:
                entries.append(RunEntry(path=Path(current), meta=read_meta(current)))
            except GradlabError as exc:
                entries.append(RunEntry(path=Path(current), meta={}, error=str(exc)))
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    entries.sort(key=lambda e: (str(e.meta.get("started_at") or ""), str(e.path)))
    return entries


def find_finished_run(root: str | os.PathLike[str], run_id: str) -> Path | None:
    """The directory of a finished run under ``root`` whose ``run_id`` matches, else ``None``.

    When several match, the one that finished last is returned.
    """
    matches = [
        entry for entry in find_runs(root)
        if entry.error is None and entry.meta.get("run_id") == run_id
        and entry.meta.get("status") == "finished"
    ]
    if not matches:
        return None
    matches.sort(key=lambda e: str(e.meta.get("finished_at") or ""))
    return matches[-1].path
