"""Feature columns typed from a Parquet (Arrow) schema, for a training config that declares none.

The kinds are the library's (`vae.columns.arrow_kind`): floating (and decimal) -> numeric, boolean -> binary,
integer -> binary when the column holds only 0 and 1, else numeric (its values decide: a min/max aggregation,
`pipelines.runtime.parquet_input.zero_one_columns`), string / large_string / dictionary -> categorical. Any other
type (lists, binary blobs, timestamps, nulls only) has no feature kind. Pure pyarrow: nothing here reads rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import pyarrow as pa

from vae.columns import INTEGER, KINDS, FeatureTypes, arrow_kind, pandas_index_columns

FEW = 8  # a kind with at most this many columns is printed with their names


def schema_kinds(schema: pa.Schema, exclude: Collection[str]) -> dict[str, str | None]:
    """column -> `arrow_kind` of its type, for every column of `schema` not in `exclude` nor a stored pandas index
    (`vae.columns.pandas_index_columns`), in schema order."""
    skipped = {*exclude, *pandas_index_columns(schema)}
    return {f.name: arrow_kind(f.type) for f in schema if f.name not in skipped}


def untyped(schema: pa.Schema, kinds: Mapping[str, str | None]) -> dict[str, str]:
    """column -> Arrow type name of the columns in `kinds` that have no feature kind."""
    return {name: str(schema.field(name).type) for name, kind in kinds.items() if kind is None}


def feature_types(kinds: Mapping[str, str | None], zero_one: Collection[str]) -> FeatureTypes:
    """The typed feature columns, in schema order within each kind: an INTEGER column is binary when it is in
    `zero_one` (it holds only 0 and 1), else numeric. Columns without a kind (None) are left out."""
    decided = {name: ("binary" if name in zero_one else "numeric") if kind == INTEGER else kind
               for name, kind in kinds.items()}  # fmt: skip
    return FeatureTypes(*(tuple(n for n, k in decided.items() if k == kind) for kind in KINDS))


def describe(types: FeatureTypes) -> str:
    """One line: the count of each kind, with the names of a kind that has at most FEW columns."""
    parts = []
    for kind in KINDS:
        names = getattr(types, kind)
        listed = f" ({', '.join(names)})" if 0 < len(names) <= FEW else ""
        parts.append(f"{len(names)} {kind}{listed}")
    return ", ".join(parts)
