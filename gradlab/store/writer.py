"""Writing one run directory incrementally: meta.json first, then Parquet parts as rows come.

Every file lands by rename (see :mod:`gradlab.store.files`), so a run that was killed keeps
every part it flushed, and its ``meta.json`` still says ``running``; readers on the same host
see that the writer's process is gone and report the run as ``stopped``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from gradlab._version import __version__
from gradlab.common.atomic import fsync_dir
from gradlab.errors import GradlabError
from gradlab.store.convert import to_arrow
from gradlab.store.files import write_failed, write_json, write_parquet
from gradlab.store.identity import run_id_for
from gradlab.store.interrupts import interrupts_deferred
from gradlab.store.layout import (
    DEFAULT_PART_ROWS,
    LOCK_FILE,
    META_FILE,
    PART_RE,
    STATUSES,
    STORE_FORMAT,
    TABLES,
    part_name,
)
from gradlab.store.liveness import effective_status, now_iso
from gradlab.store.lock import RunLock
from gradlab.store.meta import one_line, read_meta


class RunFinishedError(GradlabError):
    """A writer was asked to replace a finished run without ``overwrite``."""


class RunWriter:
    """Writes one run directory incrementally; every file lands atomically.

    Creating the writer makes the directory and writes ``meta.json`` with status
    ``running`` (plus pid, hostname, started_at). Appended rows are buffered and written as
    a new part file of each table by :meth:`flush` (or on their own once ``part_rows`` rows
    are buffered). :meth:`close` flushes and records the final status.

    Used as a context manager it closes itself: ``finished`` on a normal exit, ``stopped``
    on ``KeyboardInterrupt`` (or ``SystemExit``), ``failed`` with a one-line description on
    any other exception. Closing twice keeps the first status.

    An existing finished run at ``path`` is refused unless ``overwrite``; an existing
    unfinished one (failed, stopped, killed) is replaced. A directory that is being written
    by another live process, or that holds files other than a run's, is always refused.
    """

    def __init__(self, root_or_path: str | os.PathLike[str], meta: dict[str, Any], *,
                 overwrite: bool = False, part_rows: int = DEFAULT_PART_ROWS) -> None:
        self.path = Path(root_or_path)
        self.part_rows = int(part_rows)
        self._buffers: dict[str, list[pa.Table]] = {t: [] for t in TABLES}
        self._buffered_rows = {t: 0 for t in TABLES}
        self._next_part = {t: 0 for t in TABLES}
        self._closed = False
        self._wall_time_from_caller = "wall_time_s" in meta and meta["wall_time_s"] is not None
        self._lock = RunLock(self.path)
        self._prepare_directory(overwrite)  # takes the lock before it looks at what is there
        try:
            for table in TABLES:
                try:
                    (self.path / table).mkdir(exist_ok=True)
                except OSError as exc:
                    raise write_failed(self.path / table, exc) from None
            self._started = time.monotonic()
            self.meta: dict[str, Any] = self._initial_meta(meta)
            write_json(self.path / META_FILE, self.meta)
        except BaseException:
            self._lock.release()
            raise

    # -- setup ---------------------------------------------------------------------------------
    def _initial_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        out = dict(meta)
        out.setdefault("name", self.path.name)
        spec = out.get("spec")
        if out.get("run_id") is None and isinstance(spec, dict):
            out["run_id"] = run_id_for(spec)
        versions = dict(out.get("versions") or {})
        versions.setdefault("python", ".".join(map(str, sys.version_info[:3])))
        versions.setdefault("gradlab", __version__)
        if "torch" in sys.modules:  # reported when present, never imported here
            versions.setdefault("torch", getattr(sys.modules["torch"], "__version__", None))
        out["versions"] = versions
        out.update(
            store_format=STORE_FORMAT,
            status="running",
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=now_iso(),
            finished_at=None,
            error=None,
        )
        out.setdefault("wall_time_s", None)
        out.setdefault("nonfinite_first", None)
        return out

    def _prepare_directory(self, overwrite: bool) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise GradlabError(f"{path} exists and is not a directory; choose another run "
                               "directory")
        if not path.exists():
            try:
                path.mkdir(parents=True, exist_ok=True)  # another process may make it too
            except OSError as exc:
                raise GradlabError(f"cannot create run directory {path} ({exc.strerror}); "
                                   "choose a writable output directory") from None
        self._lock.acquire()
        try:
            _check_existing(path, overwrite)
            _clear(path)
        except BaseException:
            self._lock.release()
            raise

    # -- appending -----------------------------------------------------------------------------
    def _append(self, table: str, frame: pd.DataFrame) -> None:
        if self._closed:
            raise RuntimeError(f"run writer for {self.path} is closed")
        if frame is None or len(frame) == 0:
            return
        # Convert in slices that fill the current part: a huge frame then never exists twice
        # in full (once as pandas, once as Arrow), and no part exceeds part_rows rows.
        start = 0
        while start < len(frame):
            room = max(self.part_rows - self._buffered_rows[table], 1)
            piece = frame if start == 0 and len(frame) <= room else frame.iloc[start:start + room]
            converted = to_arrow(piece, table)
            self._buffers[table].append(converted)
            self._buffered_rows[table] += converted.num_rows
            start += len(piece)
            if self._buffered_rows[table] >= self.part_rows:
                self._write_part(table)

    def append_layers(self, frame: pd.DataFrame) -> None:
        """Buffer per-layer rows: columns step, layer, depth, metric, value."""
        self._append("layers", frame)

    def append_steps(self, frame: pd.DataFrame) -> None:
        """Buffer per-step rows: columns step, metric, value."""
        self._append("steps", frame)

    def _write_part(self, table: str) -> None:
        buffered = self._buffers[table]
        if not buffered:
            return
        combined = pa.concat_tables(buffered).unify_dictionaries().combine_chunks()
        target = self.path / table / part_name(self._next_part[table])
        # Until the bookkeeping below has run, the rows stay buffered for this same part
        # number: writing again replaces the part with the same rows, never adds a copy.
        with interrupts_deferred():
            write_parquet(combined, target)
            self._next_part[table] += 1
            self._buffers[table] = []
            self._buffered_rows[table] = 0

    # -- meta ----------------------------------------------------------------------------------
    def update_meta(self, **fields: Any) -> None:
        """Merge ``fields`` into meta.json and write it atomically.

        Setting ``wall_time_s`` here makes the caller's figure the one kept at close.
        """
        if self._closed:
            raise RuntimeError(f"run writer for {self.path} is closed")
        if "wall_time_s" in fields:
            self._wall_time_from_caller = True
        self.meta.update(fields)
        write_json(self.path / META_FILE, self.meta)

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def flush(self, **fields: Any) -> None:
        """Write the buffered rows of each table as a new part file, then meta.json with
        ``fields`` merged in.

        meta.json is written last, so what it claims (``steps_done``, say) is never more than
        the parts hold, even when the process is killed in between. Ctrl-C during a flush
        is delivered once the flush is complete.
        """
        if self._closed:
            raise RuntimeError(f"run writer for {self.path} is closed")
        with interrupts_deferred():
            for table in TABLES:
                self._write_part(table)
            if "wall_time_s" in fields:
                self._wall_time_from_caller = True
            self.meta.update(fields)
            self.meta["updated_at"] = now_iso()
            if not self._wall_time_from_caller:
                self.meta["wall_time_s"] = self._elapsed()
            write_json(self.path / META_FILE, self.meta)

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Flush, then record ``status`` (finished, failed or stopped), finished_at,
        wall_time_s and ``error``. A second call does nothing."""
        if self._closed:
            return
        if status not in STATUSES or status == "running":
            raise ValueError(f"status must be one of finished, failed, stopped; got {status!r}")
        try:
            for table in TABLES:
                self._write_part(table)
        except Exception as exc:  # keep the run readable even when its last part cannot be
            status = "failed"
            error = (error + "; " if error else "") + f"last flush failed: {one_line(exc)}"
        self._closed = True
        now = now_iso()
        self.meta.update(status=status, finished_at=now, updated_at=now,
                         error=one_line(error) if error is not None else None)
        if not self._wall_time_from_caller:
            self.meta["wall_time_s"] = self._elapsed()
        try:
            write_json(self.path / META_FILE, self.meta)
        finally:
            self._lock.release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> Literal[False]:
        if exc_type is None:
            self.close("finished")
            return False
        try:
            if issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
                self.close("stopped", error=one_line(exc))
            else:
                self.close("failed", error=one_line(exc))
        except GradlabError:
            pass  # e.g. the disk is still full: the error being raised already says so
        return False  # never swallow the exception


def _check_existing(path: Path, overwrite: bool) -> None:
    """Refuse a directory a live process is writing, a finished run (unless ``overwrite``)
    and a directory that is not a run."""
    meta_path = path / META_FILE
    if meta_path.exists():
        try:
            old = read_meta(path)
        except GradlabError:
            old = {}  # damaged: replaced like an unfinished run
        status = effective_status(old)
        if status == "running" and old.get("pid") != os.getpid():
            raise GradlabError(f"{path} is being written by process {old.get('pid')} on "
                               f"{old.get('hostname')}; wait for it or choose another "
                               "directory")
        if status == "finished" and not overwrite:
            raise RunFinishedError(f"{path} already holds a finished run; pass "
                                   "overwrite=True (--rerun) to replace it or choose another "
                                   "directory")
        return
    foreign = [p.name for p in path.iterdir()
               if not (p.name in TABLES and p.is_dir()) and not p.name.endswith(".tmp")
               and p.name != LOCK_FILE]
    if foreign:
        raise GradlabError(f"{path} exists and is not a run directory (it holds "
                           f"{foreign[0]!r}); choose a new directory for the run")


def _clear(path: Path) -> None:
    """Remove an old run's files. meta.json goes first, so that a kill half-way leaves a
    directory that is no longer a run rather than a run with missing parts."""
    (path / META_FILE).unlink(missing_ok=True)
    for leftover in path.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    for table in TABLES:
        table_dir = path / table
        if not table_dir.is_dir():
            continue
        for entry in table_dir.iterdir():
            if entry.is_file() and (PART_RE.match(entry.name) or entry.name.endswith(".tmp")):
                entry.unlink()
    fsync_dir(path)
