"""Raw columns between the library and Parquet: the Arrow types a model's columns had in training, and the
conversion of the library's numpy columns to them (written with `pipelines.storage.parquet_file`).

The training pipeline records each raw column's Arrow type in the model's metadata (`input_schema`);
a model without it gets the defaults: numeric double, binary int64, categorical string.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vae import Detector, Preprocessor

SCHEMA_KEY = "input_schema"


def recorded_schema(schema: pa.Schema, columns: tuple[str, ...]) -> dict[str, str]:
    """column -> Arrow type name in the training input's schema, for `Detector.metadata[SCHEMA_KEY]`."""
    return {column: str(schema.field(column).type) for column in columns}


def _parse(name: str | None) -> pa.DataType | None:
    try:
        return pa.type_for_alias(name) if name else None
    except ValueError:  # e.g. dictionary<...> or timestamp types: not written back as such
        return None


def column_types(detector: Detector) -> dict[str, pa.DataType]:
    """The Arrow type of every raw feature and condition column of the model, as it was in training."""
    recorded = detector.metadata.get(SCHEMA_KEY, {})
    types: dict[str, pa.DataType] = {}
    for pre in (p for p in (detector.preprocessor, detector.condition) if isinstance(p, Preprocessor)):
        defaults = [(pre.numeric, pa.float64()), (pre.binary, pa.int64()), (pre.categorical, pa.string())]
        for columns, default in defaults:
            for column in columns:
                types[column] = _parse(recorded.get(column)) or default
    return types


def to_arrow(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A library column (float64 numbers, int64 0/1, or object labels with None) as an Arrow array of `kind`;
    numbers going to an integer column are rounded and clipped to its range first, labels are parsed (e.g. "3" ->
    3 for int64)."""
    values = np.asarray(values)
    if pa.types.is_null(kind):  # the column held only nulls: keep the library's own type
        kind = pa.string() if values.dtype == object else pa.from_numpy_dtype(values.dtype)
    if values.dtype == object:
        labels = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        return labels.cast(kind)
    if pa.types.is_integer(kind):  # a drawn value beyond the type (-1 for a uint8 count) is its nearest one
        limits = np.iinfo(kind.to_pandas_dtype())
        values = np.clip(np.rint(values), limits.min, limits.max)
    elif pa.types.is_boolean(kind):
        values = values >= 0.5
    return pa.array(values, from_pandas=pa.types.is_integer(kind)).cast(kind)  # NaN: null, in an integer column
