"""Reading one table of a run (``layers`` or ``steps``) from its Parquet parts.

The row count comes from each part's footer, so the final columns are allocated once and
every part is converted straight into its slice and then dropped: the peak is the finished
frame plus one part, whatever the number of rows. Half-written ``.tmp`` files never match a
part's name and are not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradlab.errors import GradlabError, first_line
from gradlab.store.layout import CATEGORICAL, SCHEMAS, empty_frame, part_files


def read_table(run_dir: Path, table: str) -> pd.DataFrame:
    """One table of a run as a DataFrame sorted by step, filled part by part.

    Raises :class:`GradlabError` naming the part for an unreadable or damaged part file.
    """
    parts = part_files(run_dir / table)
    if not parts:
        return empty_frame(table)
    sizes = [_row_count(part) for part in parts]
    columns = _Columns(SCHEMAS[table], sum(sizes))
    offset = 0
    for part, size in zip(parts, sizes):
        end = offset + size
        for piece in _read_pieces(part, columns.schema):
            if offset + piece.num_rows > end:
                raise GradlabError(f"{part} changed while it was read; load the run again")
            columns.fill(piece, offset, part)
            offset += piece.num_rows
            del piece
        if offset != end:
            raise GradlabError(f"{part} changed while it was read; load the run again")
    frame = columns.to_frame()
    if not frame["step"].is_monotonic_increasing:
        # Parts are normally written in step order; sort only when they were not.
        frame = frame.sort_values("step", kind="stable", ignore_index=True)
    return frame


class _Columns:
    """The preallocated columns of one table, and the run-wide labels of its categoricals."""

    def __init__(self, schema: pa.Schema, total: int) -> None:
        self.schema = schema
        self.arrays: dict[str, np.ndarray] = {}
        self.labels: dict[str, dict[str, int]] = {}
        for name in schema.names:
            if name in CATEGORICAL:
                # int16 codes cover any real network; widened in fill if a run has more labels.
                self.arrays[name] = np.empty(total, dtype=np.int16)
                self.labels[name] = {}
            else:
                self.arrays[name] = np.empty(total, dtype=schema.field(name).type.to_pandas_dtype())

    def fill(self, piece: pa.Table, offset: int, part: Path) -> None:
        """Copy ``piece`` (a slice of ``part``) into rows ``offset`` onwards."""
        for name in self.schema.names:
            start = offset
            for chunk in piece.column(name).chunks:
                stop = start + len(chunk)
                if chunk.null_count:
                    raise GradlabError(f"{part} has missing values in column {name!r}; "
                                       "move it away to load the rest of the run")
                if name in CATEGORICAL:
                    self._fill_codes(name, chunk, start, stop)
                else:
                    self.arrays[name][start:stop] = chunk.to_numpy()
                start = stop

    def _fill_codes(self, name: str, chunk: pa.DictionaryArray, start: int, stop: int) -> None:
        # Map this chunk's dictionary onto the run-wide one (few entries), then its codes.
        known = self.labels[name]
        mapping = np.array(
            [known.setdefault(label, len(known)) for label in chunk.dictionary.to_pylist()],
            dtype=np.int32,
        )
        if len(known) > np.iinfo(self.arrays[name].dtype).max:
            self.arrays[name] = self.arrays[name].astype(np.int32)
        self.arrays[name][start:stop] = mapping[chunk.indices.to_numpy()]

    def to_frame(self) -> pd.DataFrame:
        """The filled columns as a DataFrame (the arrays are handed over, not copied)."""
        data: dict[str, Any] = {}
        for name in self.schema.names:
            values = self.arrays.pop(name)
            if name in CATEGORICAL:
                labels = pd.Index(list(self.labels[name]), dtype=str)
                data[name] = pd.Categorical.from_codes(values, categories=labels)
            else:
                data[name] = values
        return pd.DataFrame(data, copy=False)


def _unreadable(part: Path, exc: BaseException) -> GradlabError:
    detail = first_line(exc)
    return GradlabError(f"{part} cannot be read ({detail}); move it away to load the rest of "
                        "the run")


def _row_count(part: Path) -> int:
    """The number of rows of a part, from its footer alone."""
    try:
        return int(pq.read_metadata(part).num_rows)
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(part, exc) from None


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
