"""How the store writes a file: whole or not at all, durably, with a one-line error.

Both kinds of file go through :mod:`gradlab.common.atomic`: the content is written and synced
before it gets its final name by a rename, and the rename is synced too. meta.json is written
to an unnamed file; a part, which pyarrow writes to a path, to a hidden
``.NAME.XXXXXXXX.tmp`` that readers skip and the next write of that name removes. A process
killed at any moment leaves each file either complete or absent.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gradlab.common.atomic import replacing, write_text_atomic
from gradlab.common.jsonsafe import dumps
from gradlab.errors import GradlabError, first_line
from gradlab.store.layout import CATEGORICAL, COMPRESSION


def write_failed(path: Path, exc: OSError) -> GradlabError:
    """The one-line error for a file the store could not write (a full disk, a quota, a
    read-only or vanished directory). What was written before stays readable."""
    reason = exc.strerror or first_line(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space on that disk or pass another output directory (--out)"
    else:
        fix = "pass a writable output directory (--out)"
    return GradlabError(f"cannot write {path} ({reason}); {fix}; the parts already written "
                        "stay readable")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as strict, indented JSON (NaN and infinities as null)."""
    try:
        write_text_atomic(path, dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise write_failed(path, exc) from None


def write_parquet(table: pa.Table, path: Path) -> None:
    """Replace ``path`` with ``table`` as a zstd Parquet file, categorical columns as dictionaries."""
    try:
        with replacing(path) as tmp:
            pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=list(CATEGORICAL))
    except OSError as exc:  # pyarrow's IO errors are OSErrors too
        raise write_failed(path, exc) from None
