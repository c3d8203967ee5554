"""Writing a file whole or not at all, without leaving a temporary file behind when killed.

The content is written to an unnamed file in the target's directory (Linux ``O_TMPFILE``),
which vanishes by itself if the process dies, then given a name for the instant of the rename
over the target. Where unnamed files are not supported, a hidden named temporary file is used,
and earlier leftovers of that kind for the same target are removed on the next write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically; raises ``OSError`` when it cannot."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; raises ``OSError`` when it cannot."""
    path = Path(path)
    path = _write_bytes(path, data, mode)
    fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` for writers that need a file name.

    For libraries that write to a path themselves (Parquet, a browser's screenshot). When the
    block ends normally the file is synced and renamed over ``path``, and the rename made
    durable; when it raises (Ctrl-C included) the temporary file is removed. A process killed
    inside the block leaves a hidden ``.NAME.XXXXXXXX.tmp``; readers skip it, and the caller
    owns its removal (the run store removes them when a writer opens the run). No directory is
    scanned here: the store writes a new part per flush, and a scan per write would cost a
    listing of every part so far.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside the directory ``path`` durable (a no-op where that cannot be done)."""
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


def _write_bytes(path: Path, data: bytes, mode: int) -> Path:
    _remove_leftovers(path)
    fd = _unnamed_file(path.parent)
    if fd is None:
        return _write_named(path, data, mode)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
        # Name it for the moment of the rename only: a kill here leaves at most this name.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        # linkat(AT_SYMLINK_FOLLOW) on the /proc link names the unnamed file; os.link uses
        # linkat (not link, which cannot) only when given a directory descriptor.
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(f"self/fd/{fd}", tmp, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _unnamed_file(folder: Path) -> int | None:
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not Path("/proc/self/fd").is_dir():
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, 0o600)
    except OSError as exc:
        import errno

        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            if exc.errno == errno.ENOENT and not folder.is_dir():
                raise
            return None  # a file system without unnamed files: fall back
        raise


def _write_named(path: Path, data: bytes, mode: int) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_leftovers(path: Path) -> None:
    """Remove hidden temporary files an earlier, killed write of ``path`` left beside it."""
    try:
        leftovers = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        try:
            leftover.unlink()
        except OSError:
            pass


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    import glob

    return glob.escape(text)
