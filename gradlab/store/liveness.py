"""Is the process that wrote a run still alive? The status a run reads as now."""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Any


def now_iso() -> str:
    """The current UTC time as meta.json records it (ISO 8601, milliseconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def parse_time(value: Any) -> float | None:
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


def pid_alive(pid: int, started_at: float | None) -> bool:
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
    return status if pid_alive(pid, parse_time(meta.get("started_at"))) else "stopped"
