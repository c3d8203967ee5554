"""The one-writer lock of a run directory."""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
from pathlib import Path

from gradlab.errors import GradlabError, terminal_safe
from gradlab.store.files import write_failed
from gradlab.store.layout import LOCK_FILE


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
        """Take the lock, or raise :class:`GradlabError` naming the process that holds it."""
        # POSIX only: imported here so that reading runs works where fcntl does not exist.
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise write_failed(self.path, exc) from None
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
        import fcntl  # POSIX only, as in acquire

        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None


def _command() -> str:
    """This process's command line, shortened, as the lock file records it."""
    args = list(sys.argv)
    if args and Path(args[0]).name in ("gradlab", "__main__.py"):
        args[0] = "gradlab"
    text = shlex.join(args) or "python"
    return text if len(text) <= 200 else text[:197] + "..."
