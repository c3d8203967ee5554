"""Run directories: ``meta.json`` plus per-layer and per-step tables in Parquet parts.

Layout of one run directory (documented in the README so that other tools can read it)::

    <run>/meta.json                      settings, status, timings (JSON object)
    <run>/layers/part-00000.parquet      step int64, layer dict<string>, depth int32,
    <run>/layers/part-00001.parquet ...  metric dict<string>, value float64
    <run>/steps/part-00000.parquet ...   step int64, metric dict<string>, value float64

Every file is written to a temporary name in the same directory, synced and then renamed over
its final name, so a process killed at any moment leaves each file either complete or absent
(a leftover ``.*.tmp`` file is ignored by readers). A run that was killed keeps every part it
flushed and its ``meta.json`` still says ``running``; readers on the same host see that the
writer's process is gone and report the run as ``stopped``.

This module must stay free of torch: reports and ``gradlab runs`` read runs without it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradlab.errors import GradlabError, first_line, terminal_safe
from gradlab.store.legacy import rename_legacy_metrics

#: Version of the on-disk layout, written to ``meta.json`` as ``store_format``.
STORE_FORMAT = 1

#: The states a run can be in. ``running`` is only ever written by a live writer.
STATUSES = ("running", "finished", "failed", "stopped")

META_FILE = "meta.json"
#: Held (``fcntl.flock``) by the one process writing a run; holds that process's pid and command.
LOCK_FILE = ".lock"
TABLES = ("layers", "steps")

_DICT = pa.dictionary(pa.int32(), pa.string())
SCHEMAS: dict[str, pa.Schema] = {
    "layers": pa.schema(
        [
            ("step", pa.int64()),
            ("layer", _DICT),
            ("depth", pa.int32()),
            ("metric", _DICT),
            ("value", pa.float64()),
        ]
    ),
    "steps": pa.schema([("step", pa.int64()), ("metric", _DICT), ("value", pa.float64())]),
}
_CATEGORICAL = ("layer", "metric")

_PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_COMPRESSION = "zstd"

#: Rows buffered per table before the writer writes a part on its own (an explicit
#: :meth:`RunWriter.flush` writes whatever is buffered, however little).
DEFAULT_PART_ROWS = 2_000_000


# ---------------------------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """``json`` fallback for the values settings and meta tend to hold (numpy, paths, sets)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    return repr(obj)


def _finite_json(obj: Any) -> Any:
    """Replace NaN and infinities by ``None``, so that meta.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite_json(obj.item())
    return obj


def run_id_for(spec: dict[str, Any]) -> str:
    """A stable 12-hex-digit identity for a run's settings.

    The hash covers the canonical JSON of ``spec`` (keys sorted at every level, no
    whitespace), so the order in which settings were given does not matter, while any
    changed value gives a different id.
    """
    if not isinstance(spec, dict):
        raise TypeError(f"run_id_for expects a dict of settings, got {type(spec).__name__}")
    text = json.dumps(
        _finite_json(spec), sort_keys=True, separators=(",", ":"), default=_jsonable,
        ensure_ascii=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# small file helpers: everything lands by rename
# ---------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(final: Path) -> Path:
    # Hidden, unique and ending in .tmp: readers skip it, a new writer removes it.
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def _write_failed(path: Path, exc: OSError) -> GradlabError:
    """The one-line error for a file the store could not write (a full disk, a quota, a
    read-only or vanished directory). What was written before stays readable."""
    reason = exc.strerror or first_line(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space on that disk or pass another output directory (--out)"
    else:
        fix = "pass a writable output directory (--out)"
    return GradlabError(f"cannot write {path} ({reason}); {fix}; the parts already written "
                        "stay readable")


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(_finite_json(data), indent=2, sort_keys=False, default=_jsonable,
                      allow_nan=False)
    tmp = _temp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise
    _fsync_dir(path.parent)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = _temp_name(path)
    try:
        pq.write_table(table, tmp, compression=_COMPRESSION, use_dictionary=list(_CATEGORICAL))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # pyarrow's IO errors are OSErrors too
            raise _write_failed(path, exc) from None
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block ends, then deliver it.

    A flush interrupted half-way would leave the caller unsure which rows were written; with
    the interrupt held back, a flush either has not started or has finished when
    ``KeyboardInterrupt`` arrives, so flushing again after it never writes a row twice.
    Outside the main thread (where signals cannot be handled) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


class RunLock:
    """The one-writer lock of a run directory: an exclusive ``fcntl.flock`` on its ``.lock``.

    The operating system releases the lock when the holder exits, however it exits (a
    SIGKILL included), so a lock is never left stale. The file holds the holder's pid,
    host and command, for the error that a second writer gets.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _write_failed(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _write_failed(self.path, exc) from None
            raise GradlabError(f"{self.path.parent} is being written by {self.holder()}; wait "
                               "for it to finish, or choose another output directory") from None
        holder = {"pid": os.getpid(), "hostname": socket.gethostname(), "command": _command()}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def holder(self) -> str:
        """Who holds the lock, in words: ``process 123 on host (gradlab compare ...)``."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host, command = info["pid"], info["hostname"], info["command"]
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"
        return terminal_safe(f"process {pid} on {host} ({command})")

    def release(self) -> None:
        """Let go of the lock (twice is fine). The file stays: removing it would race."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _command() -> str:
    import shlex

    args = list(sys.argv)
    if args and Path(args[0]).name in ("gradlab", "__main__.py"):
        args[0] = "gradlab"
    text = shlex.join(args) or "python"
    return text if len(text) <= 200 else text[:197] + "..."


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _parse_time(value: Any) -> float | None:
    """Seconds since the epoch from an ISO 8601 string, or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def _part_files(table_dir: Path) -> list[Path]:
    """Finished part files of one table, in the order they were written."""
    if not table_dir.is_dir():
        return []
    found = []
    for entry in table_dir.iterdir():
        match = _PART_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


# ---------------------------------------------------------------------------------------------
# is the writer still alive?
# ---------------------------------------------------------------------------------------------
def _process_start_time(pid: int) -> tuple[str, float] | None:
    """(state, start time in epoch seconds) of a process from /proc, where there is one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        state, ticks = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None
    return state, boot + ticks / os.sysconf("SC_CLK_TCK")


def _pid_alive(pid: int, started_at: float | None) -> bool:
    """Whether the process that wrote a run may still be running on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except (OSError, OverflowError):  # a pid no process can have
        return False
    info = _process_start_time(pid)
    if info is None:
        return True
    state, process_start = info
    if state in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    # A process that began after the run started is a different one that reused the pid.
    # /proc's boot time has a one-second resolution, hence the margin.
    if started_at is not None and process_start > started_at + 2.0:
        return False
    return True


def effective_status(meta: dict[str, Any]) -> str:
    """The status a run reads as now.

    A run whose ``meta.json`` says ``running`` but whose writer process (``pid``) no longer
    exists on this host was killed without closing: it reads as ``stopped``. On another
    host the process cannot be checked, so the recorded status stands.
    """
    status = str(meta.get("status", "unknown"))
    if status != "running":
        return status
    pid = meta.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or meta.get("hostname") != socket.gethostname():
        return status
    if pid == os.getpid():
        return status
    return status if _pid_alive(pid, _parse_time(meta.get("started_at"))) else "stopped"


# ---------------------------------------------------------------------------------------------
# the run as read back
# ---------------------------------------------------------------------------------------------
def empty_frame(table: str) -> pd.DataFrame:
    """An empty table with the stored column types (``layers`` or ``steps``)."""
    return SCHEMAS[table].empty_table().to_pandas()


class _MetaView:
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
class Run(_MetaView):
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


@dataclass
class RunEntry(_MetaView):
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


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of a run directory as a dict, with the status as recorded.

    Raises :class:`GradlabError` naming the path when it is not a run directory or its
    meta.json cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise GradlabError(f"run directory {path} does not exist; pass a directory written by "
                           "gradlab (list them with `gradlab runs DIR`)")
    if not path.is_dir():
        raise GradlabError(f"{path} is not a directory; pass a run directory (one holding "
                           f"{META_FILE})")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise GradlabError(f"{path} is not a run directory (no {META_FILE}); pass a directory "
                           "written by gradlab (list them with `gradlab runs DIR`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = first_line(exc)
        raise GradlabError(f"{meta_path} cannot be read ({detail}); the run directory is "
                           "damaged: train it again or delete it") from None
    if not isinstance(meta, dict):
        raise GradlabError(f"{meta_path} does not hold a JSON object; the run directory is "
                           "damaged: train it again or delete it")
    return meta


def update_run_meta(path: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into a closed run's meta.json, written atomically; returns the new meta.

    For information added after a run finished (a run recorded by an older gradlab gets the
    fields a newer one stores). Never touches the tables.
    """
    path = Path(path)
    meta = read_meta(path)
    meta.update(fields)
    _write_json_atomic(path / META_FILE, meta)
    return meta


def _unreadable(part: Path, exc: BaseException) -> GradlabError:
    detail = first_line(exc)
    return GradlabError(f"{part} cannot be read ({detail}); move it away to load the rest of "
                        "the run")


def _read_pieces(part: Path, schema: pa.Schema) -> Iterator[pa.Table]:
    """A part file row group by row group (so that even a large part is read in slices)."""
    try:
        reader = pq.ParquetFile(part)
        groups = reader.num_row_groups
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(part, exc) from None
    for group in range(groups):
        try:
            piece = reader.read_row_group(group, columns=schema.names)
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise _unreadable(part, exc) from None
        if piece.schema.remove_metadata() != schema:
            try:
                piece = piece.cast(schema)
            except (pa.ArrowException, ValueError) as exc:
                detail = first_line(exc)
                raise GradlabError(f"{part} has columns of unexpected types ({detail}); move "
                                   "it away to load the rest of the run") from None
        yield piece


def _read_table(run_dir: Path, table: str) -> pd.DataFrame:
    """One table of a run as a DataFrame, filled part by part into preallocated columns.

    The row count comes from each part's footer, so the final columns are allocated once and
    every part is converted straight into its slice and then dropped: the peak is the
    finished frame plus one part, whatever the number of rows.
    """
    schema = SCHEMAS[table]
    parts = _part_files(run_dir / table)
    if not parts:
        return empty_frame(table)
    sizes = []
    for part in parts:
        try:
            sizes.append(pq.read_metadata(part).num_rows)
        except (OSError, pa.ArrowException) as exc:
            raise _unreadable(part, exc) from None
    total = sum(sizes)
    columns: dict[str, np.ndarray] = {}
    categories: dict[str, dict[str, int]] = {}
    for name in schema.names:
        if name in _CATEGORICAL:
            # int16 codes cover any real network; widened below if a run has more labels.
            columns[name] = np.empty(total, dtype=np.int16)
            categories[name] = {}
        else:
            columns[name] = np.empty(total, dtype=schema.field(name).type.to_pandas_dtype())
    offset = 0
    for part, size in zip(parts, sizes):
        end = offset + size
        for piece in _read_pieces(part, schema):
            if offset + piece.num_rows > end:
                raise GradlabError(f"{part} changed while it was read; load the run again")
            for name in schema.names:
                start = offset
                for chunk in piece.column(name).chunks:
                    stop = start + len(chunk)
                    if chunk.null_count:
                        raise GradlabError(f"{part} has missing values in column {name!r}; "
                                           "move it away to load the rest of the run")
                    if name in _CATEGORICAL:
                        # Map this chunk's dictionary onto the run-wide one (few entries).
                        known = categories[name]
                        mapping = np.array(
                            [known.setdefault(label, len(known)) for label in
                             chunk.dictionary.to_pylist()], dtype=np.int32,
                        )
                        if len(known) > np.iinfo(columns[name].dtype).max:
                            columns[name] = columns[name].astype(np.int32)
                        columns[name][start:stop] = mapping[chunk.indices.to_numpy()]
                    else:
                        columns[name][start:stop] = chunk.to_numpy()
                    start = stop
            offset += piece.num_rows
            del piece
        if offset != end:
            raise GradlabError(f"{part} changed while it was read; load the run again")
    data: dict[str, Any] = {}
    for name in schema.names:
        if name in _CATEGORICAL:
            labels = pd.Index(list(categories[name]), dtype=str)
            data[name] = pd.Categorical.from_codes(columns.pop(name), categories=labels)
        else:
            data[name] = columns.pop(name)
    frame = pd.DataFrame(data, copy=False)
    del data
    if not frame["step"].is_monotonic_increasing:
        # Parts are normally written in step order; sort only when they were not.
        frame = frame.sort_values("step", kind="stable", ignore_index=True)
    return frame


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
    layer_frame = rename_legacy_metrics(_read_table(run_dir, "layers")) if layers else empty_frame("layers")
    return Run(path=run_dir, meta=meta, layers=layer_frame, steps=_read_table(run_dir, "steps"))


# ---------------------------------------------------------------------------------------------
# finding runs
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# summaries for listings
# ---------------------------------------------------------------------------------------------
def _last_value(steps: pd.DataFrame, metric: str) -> float | None:
    """Value of ``metric`` at its highest recorded step (NaN kept: a diverged loss shows)."""
    if steps.empty:
        return None
    rows = steps.loc[steps["metric"] == metric, "value"]
    if rows.empty:
        return None
    return float(rows.iloc[-1])


def summarize_run(run: Run) -> dict[str, Any]:
    """Key figures of one run, for listings.

    Keys: name, path, run_id, model, status, steps (distinct steps recorded), num_steps
    (planned, from meta), last_step, last_loss, last_eval_acc, last_train_acc, num_layers,
    wall_time_s, started_at, error. Missing figures are ``None``; floats may be NaN.
    """
    meta = run.meta
    frame = run.steps if not run.steps.empty else run.layers
    recorded = int(frame["step"].nunique()) if not frame.empty else 0
    last_step = int(frame["step"].iloc[-1]) if not frame.empty else None
    layer_table = meta.get("layers")
    if isinstance(layer_table, list):
        num_layers: int | None = len(layer_table)
    elif not run.layers.empty:
        num_layers = int(run.layers["layer"].nunique())
    else:
        num_layers = None
    wall = meta.get("wall_time_s")
    return {
        "name": run.name,
        "path": str(run.path),
        "run_id": meta.get("run_id"),
        "model": meta.get("model"),
        "status": run.status,
        "steps": recorded,
        "num_steps": meta.get("num_steps"),
        "last_step": last_step,
        "last_loss": _last_value(run.steps, "loss"),
        "last_eval_acc": _last_value(run.steps, "eval_acc"),
        "last_train_acc": _last_value(run.steps, "train_acc"),
        "num_layers": num_layers,
        "wall_time_s": float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
        "started_at": meta.get("started_at"),
        "error": meta.get("error"),
    }


def summarize_runs(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """:func:`summarize_run` for every run under ``root`` (per-layer tables are not read).

    Raises :class:`GradlabError` when ``root`` does not exist. A run that cannot be read is
    summarised with status ``unreadable`` and the reason in ``error``.
    """
    root = Path(root)
    if not root.exists():
        raise GradlabError(f"{root} does not exist; pass the directory that holds your runs "
                           "(training writes them under runs/ by default)")
    if not root.is_dir():
        raise GradlabError(f"{root} is not a directory; pass the directory that holds your runs")
    summaries = []
    for entry in find_runs(root):
        if entry.error is None:
            try:
                summaries.append(summarize_run(entry.load(layers=False)))
                continue
            except GradlabError as exc:
                entry = RunEntry(path=entry.path, meta=entry.meta, error=str(exc))
            except Exception as exc:  # a field of the wrong type: that run alone is unreadable
                entry = RunEntry(path=entry.path, meta=entry.meta,
                                 error=f"{entry.path / META_FILE} holds a value of the wrong type "
                                       f"({_one_line(exc)}); train the run again or delete it")
        summaries.append({
            "name": entry.name, "path": str(entry.path), "run_id": entry.run_id,
            "model": entry.meta.get("model"), "status": "unreadable", "steps": None,
            "num_steps": entry.meta.get("num_steps"), "last_step": None, "last_loss": None,
            "last_eval_acc": None, "last_train_acc": None, "num_layers": None,
            "wall_time_s": None, "started_at": entry.meta.get("started_at"),
            "error": entry.error,
        })
    return summaries


def _fmt_float(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _fmt_wall(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def format_runs(summaries: list[dict[str, Any]], fmt: str = "table",
                root: str | os.PathLike[str] | None = None) -> str:
    """Render run summaries as an aligned text table or as JSON (NaN and inf become null)."""
    if fmt == "json":
        return json.dumps(_finite_json(summaries), indent=2, allow_nan=False)
    if fmt != "table":
        raise GradlabError(f"unknown format {fmt!r}; use table or json")
    if not summaries:
        where = f" under {root}" if root is not None else ""
        return f"no runs{where}"
    header = ("STATUS", "MODEL", "STEPS", "LOSS", "EVAL ACC", "WALL", "PATH")
    rows = []
    for s in summaries:
        steps = "-" if s["steps"] is None else str(s["steps"])
        if s.get("num_steps") is not None and s["steps"] is not None:
            steps = f"{s['steps']}/{s['num_steps']}"
        path = s["path"]
        if root is not None:
            try:
                path = str(Path(path).relative_to(root)) if Path(path) != Path(root) else "."
            except ValueError:
                pass
        row = (
            s["status"], str(s.get("model") or s["name"]), steps, _fmt_float(s["last_loss"]),
            _fmt_float(s["last_eval_acc"], 3), _fmt_wall(s["wall_time_s"]), path,
        )
        # Every cell may come from a meta.json someone else wrote: never print raw escapes.
        rows.append(tuple(terminal_safe(str(cell)) for cell in row))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _categorical(column: pd.Series) -> pd.Categorical:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.array
    return pd.Categorical(column.astype(str) if column.dtype == object else column)


def _to_arrow(frame: pd.DataFrame, table: str) -> pa.Table:
    """Check and convert one appended frame to the stored schema (extra columns dropped)."""
    schema = SCHEMAS[table]
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"{table} frame lacks columns {missing}; expected {schema.names}")
    arrays = []
    for name in schema.names:
        column = frame[name]
        if name in _CATEGORICAL:
            cat = _categorical(column)
            codes = np.asarray(cat.codes, dtype=np.int32)
            if (codes < 0).any():
                raise ValueError(f"{table} frame has missing values in column {name!r}")
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(codes, type=pa.int32()),
                pa.array(np.asarray(cat.categories.astype(str), dtype=object), type=pa.string()),
            ))
        elif name == "value":
            arrays.append(pa.array(column.to_numpy(dtype=np.float64, na_value=np.nan),
                                   type=pa.float64()))
        else:  # step, depth: integers
            values = column.to_numpy()
            if values.dtype.kind not in "iu":
                as_float = values.astype(np.float64)
                if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
                    raise ValueError(f"{table} frame column {name!r} must hold whole numbers")
            arrays.append(pa.array(values.astype(schema.field(name).type.to_pandas_dtype()),
                                   type=schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


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
                    raise _write_failed(self.path / table, exc) from None
            self._started = time.monotonic()
            self.meta: dict[str, Any] = self._initial_meta(meta)
            _write_json_atomic(self.path / META_FILE, self.meta)
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
        from gradlab._version import __version__

        versions.setdefault("gradlab", __version__)
        if "torch" in sys.modules:  # reported when present, never imported here
            versions.setdefault("torch", getattr(sys.modules["torch"], "__version__", None))
        out["versions"] = versions
        out.update(
            store_format=STORE_FORMAT,
            status="running",
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=_now_iso(),
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
            self._check_existing(path, overwrite)
        except BaseException:
            self._lock.release()
            raise

    def _check_existing(self, path: Path, overwrite: bool) -> None:
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
        else:
            foreign = [p.name for p in path.iterdir()
                       if not (p.name in TABLES and p.is_dir()) and not p.name.endswith(".tmp")
                       and p.name != LOCK_FILE]
            if foreign:
                raise GradlabError(f"{path} exists and is not a run directory (it holds "
                                   f"{foreign[0]!r}); choose a new directory for the run")
        self._clear(path)

    @staticmethod
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
                if entry.is_file() and (_PART_RE.match(entry.name) or entry.name.endswith(".tmp")):
                    entry.unlink()
        _fsync_dir(path)

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
            converted = _to_arrow(piece, table)
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
        target = self.path / table / f"part-{self._next_part[table]:05d}.parquet"
        # Until the bookkeeping below has run, the rows stay buffered for this same part
        # number: writing again replaces the part with the same rows, never adds a copy.
        with interrupts_deferred():
            _write_parquet_atomic(combined, target)
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
        _write_json_atomic(self.path / META_FILE, self.meta)

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
            self.meta["updated_at"] = _now_iso()
            if not self._wall_time_from_caller:
                self.meta["wall_time_s"] = self._elapsed()
            _write_json_atomic(self.path / META_FILE, self.meta)

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
            error = (error + "; " if error else "") + f"last flush failed: {_one_line(exc)}"
        self._closed = True
        now = _now_iso()
        self.meta.update(status=status, finished_at=now, updated_at=now,
                         error=_one_line(error) if error is not None else None)
        if not self._wall_time_from_caller:
            self.meta["wall_time_s"] = self._elapsed()
        try:
            _write_json_atomic(self.path / META_FILE, self.meta)
        finally:
            self._lock.release()

    @property
    def closed(self) -> bool:
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
                self.close("stopped", error=_one_line(exc))
            else:
                self.close("failed", error=_one_line(exc))
        except GradlabError:
            pass  # e.g. the disk is still full: the error being raised already says so
        return False  # never swallow the exception


class RunFinishedError(GradlabError):
    """A writer was asked to replace a finished run without ``overwrite``."""


def _one_line(value: BaseException | str | None, limit: int = 500) -> str:
    """A single line describing an error: ``Type: first line of message``, truncated."""
    if isinstance(value, BaseException):
        message = str(value).strip()
        text = f"{type(value).__name__}: {message}" if message else type(value).__name__
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

