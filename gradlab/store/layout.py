"""The on-disk layout of a run directory: file names, statuses and the tables' Arrow schemas.

One run directory holds::

    <run>/meta.json                      settings, status, timings (JSON object)
    <run>/layers/part-00000.parquet      step int64, layer dict<string>, depth int32,
    <run>/layers/part-00001.parquet ...  metric dict<string>, value float64
    <run>/steps/part-00000.parquet ...   step int64, metric dict<string>, value float64
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa

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
#: Columns stored as dictionaries of strings (and read back as pandas categoricals).
CATEGORICAL = ("layer", "metric")

PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
COMPRESSION = "zstd"

#: Rows buffered per table before the writer writes a part on its own (an explicit
#: :meth:`RunWriter.flush` writes whatever is buffered, however little).
DEFAULT_PART_ROWS = 2_000_000


def empty_frame(table: str) -> pd.DataFrame:
    """An empty table with the stored column types (``layers`` or ``steps``)."""
    return SCHEMAS[table].empty_table().to_pandas()


def part_name(number: int) -> str:
    """The file name of a table's part ``number``."""
    return f"part-{number:05d}.parquet"


def part_files(table_dir: Path) -> list[Path]:
    """Finished part files of one table, in the order they were written."""
    if not table_dir.is_dir():
        return []
    found = []
    for entry in table_dir.iterdir():
        match = PART_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]
