"""Tables in, columns by type out: the feature columns of a table and their kinds, inferred from the values.

A table is a pandas DataFrame, a pyarrow Table, a mapping of column name -> 1-D values, or a 2-D numpy array
(columns named x0, x1, ...). Kinds: floating -> numeric, boolean or integers that are all 0/1 -> binary, other
integers -> numeric, strings, categories and other objects -> categorical (the Arrow types map the same way).
A declared list always wins over inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def as_columns(table: Any) -> dict[str, np.ndarray]:
    """The table as column name -> 1-D numpy array (pandas, pyarrow, a mapping, or a 2-D array as x0..x{d-1})."""
    if isinstance(table, np.ndarray):
        if table.ndim != 2:
            raise ValueError(f"a numpy table must be 2-D (rows, features), got shape {table.shape}")
        return {f"x{i}": table[:, i] for i in range(table.shape[1])}
    if hasattr(table, "to_pydict") and hasattr(table, "schema"):  # pyarrow.Table
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):  # pandas.DataFrame
        return {str(name): table[name].to_numpy() for name in table.columns}
    if isinstance(table, Mapping):
        return {str(name): np.asarray(values) for name, values in table.items()}
    raise TypeError(f"expected a pandas DataFrame, a pyarrow Table, a mapping or a 2-D array, got {type(table)}")


def _is_binary(values: np.ndarray) -> bool:
    if values.dtype == bool:
        return True
    # floats stay numeric even when they hold only 0/1: a float column may take any value when scored
    return values.dtype.kind in "iu" and values.size > 0 and bool(np.isin(values, (0, 1)).all())


def infer_kind(values: np.ndarray) -> str:
    """ "numeric", "binary" or "categorical" for one column (N,)."""
    if _is_binary(values):
        return "binary"
    if values.dtype.kind in "iuf":
        return "numeric"
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


def infer_feature_types(
    columns: Mapping[str, np.ndarray],
    exclude: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    binary: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> FeatureTypes:
    """The feature columns: every column not in `exclude` (keys, labels, conditions), typed by `infer_kind`.

    Any of `numeric` / `binary` / `categorical` given: those lists are used as declared and nothing is inferred.
    """
    if numeric is not None or binary is not None or categorical is not None:
        return FeatureTypes(tuple(numeric or ()), tuple(binary or ()), tuple(categorical or ()))
    kinds: dict[str, list[str]] = {"numeric": [], "binary": [], "categorical": []}
    for name, values in columns.items():
        if name not in exclude:
            kinds[infer_kind(np.asarray(values))].append(name)
    if not any(kinds.values()):
        raise ValueError(f"no feature columns: the table has only {sorted(columns)}, all excluded")
    return FeatureTypes(*(tuple(kinds[k]) for k in ("numeric", "binary", "categorical")))
