"""Checks of Parquet input with pyarrow, from metadata only and before Ray starts: the path, the columns and
their types, the row count, all-null columns; `DataError` names what is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.storage import filesystems
from vae import ImagePreprocessor
from vae.columns import arrow_kind, plain_arrow_type
from vae.labels import canonical_label, parse_number

FOOTER_READERS = 16
PARQUET_SUFFIX = ".parquet"  # the only files Ray Data's read_parquet reads (its default file_extensions)


class DataError(ValueError):
    """The input data cannot be used; the message names the path or the columns."""


def _file_info(path: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """The filesystem of `path`, the path inside it and what is there; StorageError (one line) when the location
    cannot be read (credentials, endpoint)."""
    filesystem, where = filesystems.filesystem(path)
    try:
        return filesystem, where, filesystem.get_file_info(where)
    except (OSError, pa.ArrowException) as err:
        raise filesystems.explain(err, path) from err


def unreadable(path: str, err: Exception) -> DataError:
    """The DataError for Parquet at `path` that pyarrow cannot read (`err`: a corrupt footer or page), in one line."""
    return DataError(f"cannot read Parquet at {path}: {str(err).splitlines()[0]}")


def open_parquet(path: str, schema: pa.Schema | None = None) -> pads.Dataset:
    """A pyarrow dataset over a Parquet file, directory (hive partitions allowed) or URI, with `schema` (None: the
    first file's); a location that cannot be read raises StorageError (missing bucket, credentials, endpoint), a
    missing path DataError."""
    filesystem, where, info = _file_info(path)
    if info.type == pafs.FileType.NotFound:
        filesystems.require_bucket(path)
        raise DataError(f"data path {path} does not exist")
    others: list[str] = []
    try:
        if info.type == pafs.FileType.Directory:  # Ray Data reads only its *.parquet files: check exactly those
            found = _data_files(path, where)
            files = [f for f in found if f.lower().endswith(PARQUET_SUFFIX)]
            others = [f for f in found if not f.lower().endswith(PARQUET_SUFFIX)]
            dataset = pads.dataset(files, schema=schema, filesystem=filesystem, format="parquet",
                                   partitioning="hive", partition_base_dir=where)  # fmt: skip
        else:
            dataset = pads.dataset(where, schema=schema, filesystem=filesystem, format="parquet", partitioning="hive")
    except (OSError, pa.ArrowException) as err:
        raise unreadable(path, err) from err
    if not dataset.files:
        named = f" (Ray Data reads only files named *{PARQUET_SUFFIX}; here: {others[:3]})" if others else ""
        raise DataError(f"{path} holds no Parquet files{named}")
    return dataset


def _data_files(path: str, where: str) -> list[str]:
    """The files under directory `path` (`where` on its filesystem), at any depth, as paths on that filesystem,
    but those a name starting with "." or "_" hides (as pyarrow's datasets skip them: _SUCCESS, .crc files,
    _temporary/)."""
    return [f"{where.rstrip('/')}/{rel}" for rel in filesystems.list_files(path)
            if not any(part.startswith((".", "_")) for part in rel.split("/"))]  # fmt: skip


def check_ray_readable(path: str) -> None:
    """DataError when `path` is a single file that Ray Data's `read_parquet` skips: it reads only files named
    *.parquet, even one named on its own ("no files found under ..."). pyarrow, which `open_parquet` uses, reads it."""
    if path.lower().endswith(PARQUET_SUFFIX):
        return
    if _file_info(path)[2].type == pafs.FileType.File:
        raise DataError(f"{path}: Ray Data reads only files named *{PARQUET_SUFFIX}; rename the file")


def open_merged(path: str) -> pads.Dataset:
    """`open_parquet` with every file's types merged as Ray Data merges them (`merged_schema`): the first file's
    schema alone cannot hold the others' values (int64 there and double later; null in an empty first file)."""
    dataset = open_parquet(path)
    merged = merged_schema(dataset)
    return dataset if merged == dataset.schema else open_parquet(path, merged)


def partition_columns(dataset: pads.Dataset) -> list[str]:
    """The hive partition keys of the dataset's file paths (`date=2026-11-01/`), in schema order: columns Ray
    Data adds to every row from the path, not values stored in the files. Reads no footer."""
    keys = {k for f in dataset.get_fragments() for k in pads.get_partition_keys(f.partition_expression)}
    return [name for name in dataset.schema.names if name in keys]


def merged_schema(dataset: pads.Dataset) -> pa.Schema:
    """The dataset's columns with every file's types merged as Ray Data merges them (int64 in one file and double
    in another: double; `_check_mergeable`); `dataset.schema` is the first file's alone. Reads every footer."""
    fragments = list(dataset.get_fragments())
    merged: dict[str, tuple[pa.DataType, str]] = {}
    for fragment, footer in zip(fragments, read_footers(fragments), strict=True):
        _check_mergeable(merged, footer.schema.to_arrow_schema(), fragment.path)
    return _with_merged_types(dataset.schema, merged)


def _with_merged_types(schema: pa.Schema, merged: Mapping[str, tuple[pa.DataType, str]]) -> pa.Schema:
    """`schema` (the first file's, with the hive partition keys) with the types `_check_mergeable` folded."""
    files = pa.schema([pa.field(name, kind) for name, (kind, _) in merged.items()])
    return pa.unify_schemas([schema, files], promote_options="permissive")


@dataclass(frozen=True)
class CheckedParquet:
    """What `check_parquet` learned from the footers."""

    rows: int
    schema: pa.Schema  # every file's types merged as Ray Data merges them (`merged_schema`)


def check_label(path: str, schema: pa.Schema, label: str) -> None:
    """DataError unless the `label` column of `schema` holds numbers or booleans (1 or True: an anomaly)."""
    kind = plain_arrow_type(schema.field(label).type)
    if not _is_numeric(kind):  # booleans included
        raise DataError(f"{path}: label column {label!r} must hold 0 (normal) and 1 (anomaly), or booleans; "
                        f"it is {kind}")  # fmt: skip


def _is_numeric(kind: pa.DataType) -> bool:
    return (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


def _list_values(kind: pa.DataType) -> tuple[pa.DataType, int | None]:
    """The leaf type of a (nested) list type, and its values per row when every level has a fixed size."""
    fixed: int | None = 1
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        fixed = fixed * kind.list_size if fixed is not None and pa.types.is_fixed_size_list(kind) else None
        kind = kind.value_type
    return kind, fixed


def check_image_column(path: str, schema: pa.Schema, image: ImagePreprocessor) -> None:
    """Raise DataError unless the image column's type can hold `image`'s images: a (nested) list of numbers
    (of exactly C*H*W values where the type fixes the size) for `array`, binary for `png`."""
    kind = schema.field(image.column).type
    if pa.types.is_null(kind):
        return  # reported with the other all-null columns
    expected = f"{image.described_size} per row as {'PNG bytes' if image.encoding == 'png' else 'a list of numbers'}"
    if image.encoding == "png":
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
            raise DataError(f"{path}: image column {image.column!r} has type {kind}; expected {expected}")
        return
    leaf, fixed = _list_values(kind)
    if leaf == kind or not _is_numeric(leaf):
        raise DataError(f"{path}: image column {image.column!r} has type {kind}; expected {expected}")
    if fixed is not None and fixed != image.size:
        raise DataError(f"{path}: image column {image.column!r} holds {fixed} values per row; expected {expected}")


def check_parquet(
    path: str,
    required: tuple[str, ...],
    numeric: tuple[str, ...],
    image: ImagePreprocessor | None = None,
    categories: Mapping[str, tuple[str, Sequence[str]]] | None = None,
) -> CheckedParquet:
    """Check that the `required` columns exist, the `numeric` ones hold numbers, the categorical columns of
    `categories` (column -> its training `label_kind` and labels) have a type whose values can be those labels,
    and the `image` column (one of `required`) can hold its images; returns the row count and the merged schema
    (from Parquet metadata, each footer read once). Raises DataError naming the missing or mistyped columns, or an
    empty input."""
    dataset = open_parquet(path)
    schema = dataset.schema
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {schema.names}")
    _check_types(path, schema, numeric, categories or {})
    if image is not None:
        check_image_column(path, schema, image)
    try:
        fragments = list(dataset.get_fragments())
        footers = read_footers(fragments)
    except (OSError, pa.ArrowException) as err:
        raise unreadable(path, err) from err
    merged: dict[str, tuple[pa.DataType, str]] = {}  # column -> its type so far and the file that gave it
    for fragment, footer in zip(fragments, footers, strict=True):
        keys = pads.get_partition_keys(fragment.partition_expression)  # hive directories: `date=.../`
        file_schema = footer.schema.to_arrow_schema()
        lacking = [c for c in required if c not in [*file_schema.names, *keys]]
        if lacking:
            raise DataError(f"{fragment.path}: missing column(s) {lacking}, which other files of {path} have")
        _check_types(fragment.path, file_schema, numeric, categories or {})
        _check_mergeable(merged, file_schema, fragment.path)
    rows = sum(footer.num_rows for footer in footers)
    if rows == 0:
        raise DataError(f"{path}: no rows")
    schema = _with_merged_types(schema, merged)
    null_typed = [c for c in required if pa.types.is_null(schema.field(c).type)]  # in every file, not the first
    empty = null_typed or all_null_columns(footers, required)
    if empty:
        raise DataError(f"{path}: column(s) {empty} hold only nulls")
    return CheckedParquet(rows, schema)


def _check_types(
    where: str, schema: pa.Schema, numeric: tuple[str, ...], categories: Mapping[str, tuple[str, Sequence[str]]]
) -> None:
    """Raise DataError naming the `numeric` columns of `schema` (one file's, or a dataset's) that hold no numbers,
    or a `categories` column whose type cannot hold its training labels (`category_mismatch`); a null-typed or
    absent column is left to the other checks."""
    kinds = {c: schema.field(c).type for c in numeric if c in schema.names}
    mistyped = {c: str(k) for c, k in kinds.items() if not _is_numeric(k) and not pa.types.is_null(k)}
    if mistyped:
        raise DataError(f"{where}: numeric feature column(s) hold non-numeric values: {mistyped}")
    for column, (label_kind, labels) in categories.items():
        if column in schema.names:
            problem = category_mismatch(schema.field(column).type, label_kind, labels)
            if problem:
                raise DataError(
                    f"{where}: categorical column {column!r} is {schema.field(column).type} here, {problem}"
                )


def _check_mergeable(merged: dict[str, tuple[pa.DataType, str]], schema: pa.Schema, where: str) -> None:
    """Fold one file's `schema` into `merged` (column -> its type over the files so far, and the first file that
    had it), as Ray Data merges the files' schemas (`pa.unify_schemas(..., promote_options="permissive")`: int64
    and double merge); raise DataError naming the column and both files when they cannot (bool and int64, string
    and dictionary, numbers and text)."""
    for field in schema:
        if field.name not in merged:
            merged[field.name] = (field.type, where)
            continue
        kind, first = merged[field.name]
        try:
            pair = [pa.schema([pa.field(field.name, kind)]), pa.schema([field])]
            merged[field.name] = (pa.unify_schemas(pair, promote_options="permissive").field(0).type, first)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise DataError(
                f"{where}: column {field.name!r} is {field.type} here but {kind} in {first}, and "
                "the two cannot be read as one column: write it with one type in every file"
            ) from err


def category_mismatch(kind: pa.DataType, label_kind: str, labels: Sequence[str]) -> str | None:
    """Why no value, or not every value, of Arrow type `kind` can read as one of a categorical column's training
    `labels` (`vae.labels`, of `label_kind`), else None: a type no category is read from (lists, structs, bytes,
    times); for text labels, booleans when no label is True / False, numbers when no label spells a number or
    when some label spells one in a form no number prints as ("02134", "1.50": the type lost those digits)."""
    if pa.types.is_null(kind):
        return None
    if arrow_kind(kind) is None:
        return "a type no category is read from: write the column as text or numbers, as in training"
    kind = plain_arrow_type(kind)
    if label_kind != "text" or not labels:
        return None
    shown = ", ".join([*labels[:3], "..."] if len(labels) > 3 else labels)
    never = f"but its training labels are text ({shown}): every value would be a category never seen in training"
    if pa.types.is_boolean(kind):
        return None if {"True", "False"} & set(labels) else never
    if _is_numeric(kind):
        spelled = [label for label in labels if parse_number(label) is not None]
        if not spelled:
            return never
        lossy = [label for label in spelled if canonical_label(label, "number") != label]
        if lossy:
            return (
                f"but training labels such as {lossy[:3]} spell numbers with digits a number does not keep "
                "(leading or trailing zeros, spaces): write the column as text, as in training"
            )
    return None


def read_footers(fragments: list[pads.ParquetFileFragment]) -> list[pq.FileMetaData]:
    """Each file's Parquet footer, in order, read by FOOTER_READERS threads: on an object store each footer is a
    request, and thousands of them one after another take minutes."""
    with ThreadPoolExecutor(max_workers=FOOTER_READERS) as pool:
        return list(pool.map(lambda fragment: fragment.metadata, fragments))


def all_null_columns(footers: Iterable[pq.FileMetaData], columns: tuple[str, ...]) -> list[str]:
    """Columns whose every value is null, from the Parquet footers' statistics (no data is read);
    a column whose statistics are missing in any row group is not reported."""
    nulls = dict.fromkeys(columns, 0)
    total = 0
    for metadata in footers:
        # Parquet stores leaf columns: a struct or map column is several, so a column's place in the Arrow schema
        # is not its leaf's index; a nested column has no leaf of its own name and is not reported.
        leaves = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            total += group.num_rows
            for column in list(nulls):
                stats = group.column(leaves[column]).statistics if column in leaves else None
                if stats is None or not stats.has_null_count:
                    nulls.pop(column)
                else:
                    nulls[column] += stats.null_count
    return [c for c, n in nulls.items() if total and n == total]
