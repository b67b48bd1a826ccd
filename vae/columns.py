"""Tables in, columns by type out: the feature columns of a table and their kinds, from the column types.

A table is a pandas DataFrame, a pyarrow Table, a mapping of column name -> 1-D values, or a 2-D numpy array
(columns named x0, x1, ...). Kinds: floating and decimal -> numeric, boolean -> binary, integers -> binary when
every present value is 0 or 1, else numeric, strings, categories (pandas category, Arrow dictionary) and other
objects -> categorical. Dates, times and durations are no feature kind: fitting on one is refused with the
column's name. The Arrow types map as the pipeline maps a Parquet schema (`arrow_kind`), and pandas' nullable
types (Int64, Float64, boolean) as their numpy kinds with missing values. A declared list always wins over
inference.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .labels import CONTAINERS, is_missing, plain_values

KINDS = ("numeric", "binary", "categorical")
INTEGER = "integer"  # an integer column: binary or numeric, as its values decide
PANDAS_INDEX = re.compile(r"__index_level_\d+__")
DECIMAL_DIGITS = 15  # a float64 keeps every decimal of up to 15 significant digits apart


def arrow_kind(kind: Any) -> str | None:
    """The feature kind of a pyarrow DataType (numeric, binary, categorical or INTEGER); None when none fits it."""
    import pyarrow as pa

    text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    if text or pa.types.is_dictionary(kind):
        return "categorical"
    if pa.types.is_boolean(kind):
        return "binary"
    if pa.types.is_integer(kind):
        return INTEGER
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    return None


def plain_arrow_type(kind: Any) -> Any:
    """The pyarrow DataType a column of type `kind` is read as: a dictionary's value type, float64 for a decimal,
    else `kind` itself."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        return kind.value_type
    return pa.float64() if pa.types.is_decimal(kind) else kind


def _exact_integers(as_float: np.ndarray, as_objects: Callable[[], np.ndarray]) -> np.ndarray:
    """Integers with missing entries, as float64 with NaN (`as_float`) when float64 holds every one exactly, else
    as Python ints and None (`as_objects()`): a code such as 2**53 + 1 stays itself, not its float neighbour."""
    present = as_float[~np.isnan(as_float)]
    return as_float if not present.size or np.abs(present).max() < 2**53 else as_objects()


def _arrow_values(column: Any) -> np.ndarray:
    """A pyarrow ChunkedArray as (N,) numpy values of its `plain_arrow_type`: decoded categories as objects,
    integers with nulls as `_exact_integers`, decimals of more than DECIMAL_DIGITS digits as Decimal objects."""
    import pyarrow as pa

    if pa.types.is_decimal(column.type) and column.type.precision > DECIMAL_DIGITS:  # float64 would merge codes
        return np.array(column.to_pylist(), dtype=object)  # decimal.Decimal values, None where missing
    plain = column.cast(plain_arrow_type(column.type))
    values = plain.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(plain.type) and plain.null_count:
        return _exact_integers(values, lambda: np.array(plain.to_pylist(), dtype=object))
    return plain_values(values) if pa.types.is_dictionary(column.type) else values


def pandas_values(series: Any) -> np.ndarray:
    """A pandas Series as (N,) numpy values: categories as objects, nullable floats at their width with NaN, nullable
    integers as their numpy integers when none is missing, else as `_exact_integers`, timezone-aware times as UTC
    datetime64."""
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        narrow = dtype.categories.dtype.kind == "f" and dtype.categories.dtype.itemsize < 8
        return plain_values(series.to_numpy()) if narrow else series.astype(object).to_numpy()
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "iu":  # Int64, int64[pyarrow], ...
        if not series.hasnans:
            return series.to_numpy(dtype=getattr(dtype, "numpy_dtype", None))  # a SparseDtype has none: its own
        as_float = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return _exact_integers(as_float, lambda: series.to_numpy(dtype=object, na_value=None))
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind == "f":  # Float32, double[pyarrow]
        return series.to_numpy(dtype=getattr(dtype, "numpy_dtype", np.float64), na_value=np.nan)  # its own width
    return series.to_numpy()


def _unique_names(names: list[str]) -> list[str]:
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"the table names more than one column {repeated}: rename them")
    return names


def pandas_index_columns(schema: Any) -> set[str]:
    """The columns of a pyarrow Schema that hold an unnamed pandas index (`__index_level_0__`, ...: what pyarrow
    stores for the index of a filtered or sorted DataFrame), which no user names: no feature columns. A named index
    stays a column (it is often the id, which a user excludes or declares as a key by its name)."""
    return {name for name in schema.names if PANDAS_INDEX.fullmatch(name)}


def _arrow_names(table: Any) -> list[str]:
    """A pyarrow Table's column names less its `pandas_index_columns`."""
    index = pandas_index_columns(table.schema)
    return _unique_names([name for name in table.column_names if name not in index])


def _unmasked(values: Any) -> np.ndarray:
    """`values` as a plain numpy array; a masked array's masked entries as None (missing), not the data under
    the mask."""
    if np.ma.isMaskedArray(values):
        plain = np.array(values.data, dtype=object)
        plain[np.ma.getmaskarray(values)] = None
        return plain
    return np.asarray(values)


def as_columns(table: Any) -> dict[str, np.ndarray]:
    """The table as column name -> 1-D numpy array (pandas, pyarrow, a mapping, or a 2-D array as x0..x{d-1})."""
    if isinstance(table, np.ndarray):
        table = _unmasked(table)  # also a plain array for np.matrix, whose columns stay 2-D
        if table.ndim != 2:
            raise ValueError(f"a numpy table must be 2-D (rows, features), got shape {table.shape}")
        return {f"x{i}": table[:, i] for i in range(table.shape[1])}
    if hasattr(table, "to_pydict") and hasattr(table, "schema"):  # pyarrow.Table
        return {name: _arrow_values(table.column(name)) for name in _arrow_names(table)}
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # pandas.DataFrame
        names = _unique_names([str(name) for name in table.columns])
        return {name: pandas_values(table.iloc[:, i]) for i, name in enumerate(names)}
    if isinstance(table, Mapping):
        columns = dict(zip(_unique_names([str(name) for name in table]), map(_unmasked, table.values()), strict=True))
        scalars = [name for name, values in columns.items() if values.ndim == 0]
        if scalars:
            raise ValueError(f"the table's column(s) {scalars} are one value, not a column of rows (one row: "
                             f"{{name: [value], ...}})")  # fmt: skip
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the table's columns differ in length: {lengths}")
        return columns
    raise TypeError(f"expected a pandas DataFrame, a pyarrow Table, a mapping or a 2-D array, got {type(table)}")


def type_kinds(table: Any) -> dict[str, str | None]:
    """column -> the kind its declared type fixes, for the columns whose type does (the rest are typed by their
    values, `infer_kind`): "categorical" for a pandas category or an Arrow dictionary / string, "binary" for a
    boolean, "numeric" for an Arrow floating or decimal, INTEGER for an integer (numeric unless it holds only
    0/1), None for dates, times, durations and other types with no feature kind."""
    if hasattr(table, "to_pydict") and hasattr(table, "schema"):  # pyarrow.Table
        return {name: arrow_kind(table.schema.field(name).type) for name in _arrow_names(table)}
    if hasattr(table, "columns") and hasattr(table, "dtypes"):  # pandas.DataFrame
        import pandas as pd

        kinds: dict[str, str | None] = {}
        for name, dtype in table.dtypes.items():
            if isinstance(dtype, pd.ArrowDtype):  # read_parquet(dtype_backend="pyarrow"): typed as Arrow types are
                kinds[str(name)] = arrow_kind(dtype.pyarrow_dtype)
            elif isinstance(dtype, pd.CategoricalDtype):
                kinds[str(name)] = "categorical"
            elif isinstance(dtype, pd.BooleanDtype):
                kinds[str(name)] = "binary"
            elif dtype.kind in "iu":
                kinds[str(name)] = INTEGER
            elif dtype.kind in "mM" or isinstance(dtype, pd.PeriodDtype | pd.IntervalDtype):
                kinds[str(name)] = None
        return kinds
    return {}


def _is_zero_one(values: np.ndarray) -> bool:
    """Whether every present value of (N,) numbers is 0 or 1 (and at least one is present)."""
    present = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    return present.size > 0 and bool(np.isin(present, (0, 1)).all())


def infer_kind(values: np.ndarray) -> str | None:
    """ "numeric", "binary" or "categorical" for one column (N,) from its numpy values; None for dates, times and
    durations. Floats stay numeric even when they hold only 0/1: a float column may take any value when scored."""
    kind = values.dtype.kind
    if kind == "b":
        return "binary"
    if kind in "iu":
        return "binary" if _is_zero_one(values) else "numeric"
    if kind == "f":
        return "numeric"
    if kind in "mM":
        return None
    return _object_kind([v for v in values if not is_missing(v)])


def _object_kind(present: list[Any]) -> str | None:
    """The kind of an object column from its present values' Python types: booleans binary; integers binary when
    all are 0/1, else numeric; any other numbers (floats, Decimals) numeric; dates, times, durations and containers
    (lists, arrays, dicts) None; anything else (text, mixed types) categorical. A DataFrame's `to_numpy()`, a SQL
    DECIMAL column and a list with None all arrive like this."""
    import datetime
    import decimal

    def all_of(types: type | tuple[type, ...]) -> bool:
        return bool(present) and all(isinstance(v, types) for v in present)

    if any(isinstance(v, CONTAINERS) for v in present):
        return None  # lists or arrays (embeddings): no one feature
    if all_of((bool, np.bool_)):
        return "binary"
    if any(isinstance(v, bool | np.bool_) for v in present):
        return "categorical"  # True next to numbers: labels, not amounts
    if all_of((int, np.integer)):
        return "binary" if all(v in (0, 1) for v in present) else "numeric"
    if all_of((int, float, decimal.Decimal, np.number)):
        return "numeric"
    if all_of((datetime.date, datetime.time, datetime.timedelta, np.datetime64, np.timedelta64)):
        return None
    return "categorical"


@dataclass(frozen=True)
class FeatureTypes:
    """The feature columns by kind, in table order within each kind."""

    numeric: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.numeric, *self.binary, *self.categorical)


def names(columns: str | Sequence[Any] | None) -> list[str]:
    """Column names as `as_columns` writes them (str), from a list, tuple, pandas Index or array, or one name."""
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else [str(c) for c in columns]


def infer_feature_types(
    columns: Mapping[str, np.ndarray],
    exclude: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    binary: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    types: Mapping[str, str | None] | None = None,
) -> FeatureTypes:
    """The feature columns: every column not in `exclude` (keys, labels, conditions), typed by `types` (the kinds
    the table's column types fix, `type_kinds`) or else by `infer_kind` on its values.

    Any of `numeric` / `binary` / `categorical` given: those lists are used as declared and nothing is inferred.
    Names are compared as `as_columns` writes them (str: a DataFrame's column 0 is "0"). Raises ValueError naming
    the excluded or declared columns the table does not have, and the columns with no feature kind (dates, ...).
    """
    exclude, declared = names(exclude), [names(d) for d in (numeric, binary, categorical)]
    absent = [c for c in [*exclude, *sum(declared, [])] if c not in columns]
    if absent:
        raise ValueError(f"column(s) {absent} named in exclude / numeric / binary / categorical are not in the "
                         f"table, which has {sorted(columns)}")  # fmt: skip
    if numeric is not None or binary is not None or categorical is not None:
        both = [c for c in sum(declared, []) if c in exclude]
        if both:
            raise ValueError(f"column(s) {both} are declared as features and excluded: name each in one of them")
        return FeatureTypes(*(tuple(d) for d in declared))
    types = types or {}
    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    untyped = []
    for name, values in columns.items():
        if name in exclude:
            continue
        values = np.asarray(values)
        kind = types[name] if name in types else infer_kind(values)
        if kind == INTEGER:
            kind = "binary" if _is_zero_one(values.astype(np.float64)) else "numeric"
        (untyped if kind is None else kinds[kind]).append(name)
    if untyped:
        raise ValueError(f"column(s) {untyped} hold dates, times or other values with no feature kind: exclude them "
                         "or derive numbers from them")  # fmt: skip
    if not any(kinds.values()):
        raise ValueError(f"no feature columns: the table has only {sorted(columns)}, all excluded")
    return FeatureTypes(*(tuple(kinds[k]) for k in KINDS))
