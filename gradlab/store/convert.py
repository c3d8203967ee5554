"""Appended pandas frames checked and converted to the stored Arrow schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from gradlab.store.layout import CATEGORICAL, SCHEMAS


def to_arrow(frame: pd.DataFrame, table: str) -> pa.Table:
    """Check and convert one appended frame to the stored schema (extra columns dropped).

    Raises ``ValueError`` for a missing column, a missing label, or a step or depth that is
    not a whole number.
    """
    schema = SCHEMAS[table]
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"{table} frame lacks columns {missing}; expected {schema.names}")
    arrays = []
    for name in schema.names:
        column = frame[name]
        if name in CATEGORICAL:
            arrays.append(_dictionary(column, table, name))
        elif name == "value":
            arrays.append(pa.array(column.to_numpy(dtype=np.float64, na_value=np.nan),
                                   type=pa.float64()))
        else:  # step, depth
            arrays.append(_whole_numbers(column, table, name, schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _categorical(column: pd.Series) -> pd.Categorical:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.array
    return pd.Categorical(column.astype(str) if column.dtype == object else column)


def _dictionary(column: pd.Series, table: str, name: str) -> pa.DictionaryArray:
    """A label column as a dictionary of strings (its codes as they are: no pass over labels)."""
    cat = _categorical(column)
    codes = np.asarray(cat.codes, dtype=np.int32)
    if (codes < 0).any():
        raise ValueError(f"{table} frame has missing values in column {name!r}")
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, type=pa.int32()),
        pa.array(np.asarray(cat.categories.astype(str), dtype=object), type=pa.string()),
    )


def _whole_numbers(column: pd.Series, table: str, name: str, arrow_type: pa.DataType) -> pa.Array:
    """An integer column; floats are accepted when every value is a whole number."""
    values = column.to_numpy()
    if values.dtype.kind not in "iu":
        as_float = values.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            raise ValueError(f"{table} frame column {name!r} must hold whole numbers")
    return pa.array(values.astype(arrow_type.to_pandas_dtype()), type=arrow_type)
