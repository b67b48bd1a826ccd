"""Reading Parquet rows with Ray Data: schema checks, a deterministic split, fitted preprocessing, encoding.

The schema and row count are checked with pyarrow (metadata only) before Ray starts; statistics are
Ray Data aggregations over the training split, never a copy of the data on the driver.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import ray.data
from ray.data.aggregate import Count, Max, Mean, Min, Std, Unique

from pipelines.settings.yaml_configs import DataConfig
from pipelines.storage import filesystems
from vae import DataLayout, ImagePreprocessor, Preprocessor
from vae.preprocessing import MAX_MAGNITUDE, Z_BOUND, canonical_labels, column_label_kind, label_kind, usable

from .feature_kinds import INTEGER, describe, feature_types, schema_kinds, untyped

SPLIT_BUCKETS = 1_000_000
KIND_PREFIX = "__label_kind__:"  # the statistics input's column of each categorical value's label kind


class DataError(ValueError):
    """The input data cannot be used; the message names the path or the columns."""


def open_parquet(path: str) -> pads.Dataset:
    """A pyarrow dataset over a Parquet file, directory (hive partitions allowed) or URI; a location that cannot
    be read raises StorageError (missing bucket, credentials, endpoint), a missing path DataError."""
    filesystem, where = filesystems.filesystem(path)
    try:
        info = filesystem.get_file_info(where)
    except (OSError, pa.ArrowException) as err:
        raise filesystems.explain(err, path) from err
    if info.type == pafs.FileType.NotFound:
        filesystems.require_bucket(path)
        raise DataError(f"data path {path} does not exist")
    try:
        return pads.dataset(where, filesystem=filesystem, format="parquet", partitioning="hive")
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot read Parquet at {path}: {str(err).splitlines()[0]}") from err


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
    path: str, required: tuple[str, ...], numeric: tuple[str, ...], image: ImagePreprocessor | None = None
) -> int:
    """Check that the `required` columns exist, the `numeric` ones hold numbers and the `image` column (one of
    `required`) can hold its images; returns the row count (from Parquet metadata). Raises DataError naming
    the missing or mistyped columns, or an empty input."""
    dataset = open_parquet(path)
    schema = dataset.schema
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {schema.names}")
    null_typed = [c for c in required if pa.types.is_null(schema.field(c).type)]
    mistyped = {c: str(schema.field(c).type) for c in numeric if not _is_numeric(schema.field(c).type)}
    mistyped = {c: kind for c, kind in mistyped.items() if c not in null_typed}
    if mistyped:
        raise DataError(f"{path}: numeric feature column(s) hold non-numeric values: {mistyped}")
    if image is not None:
        check_image_column(path, schema, image)
    try:
        rows = dataset.count_rows()
        empty = null_typed or (all_null_columns(dataset, required) if rows else [])
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"cannot read Parquet at {path}: {str(err).splitlines()[0]}") from err
    if rows == 0:
        raise DataError(f"{path}: no rows")
    if empty:
        raise DataError(f"{path}: column(s) {empty} hold only nulls")
    return rows


def all_null_columns(dataset: pads.Dataset, columns: tuple[str, ...]) -> list[str]:
    """Columns whose every value is null, from the Parquet footers' statistics (no data is read);
    a column whose statistics are missing in any row group is not reported."""
    nulls = dict.fromkeys(columns, 0)
    total = 0
    for fragment in dataset.get_fragments():
        metadata = fragment.metadata
        names = metadata.schema.to_arrow_schema().names
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            total += group.num_rows
            for column in list(nulls):
                stats = group.column(names.index(column)).statistics if column in names else None
                if stats is None or not stats.has_null_count:
                    nulls.pop(column)
                else:
                    nulls[column] += stats.null_count
    return [c for c, n in nulls.items() if total and n == total]


def inferred_kinds(config: DataConfig, schema: pa.Schema) -> dict[str, str]:
    """column -> kind (`pipelines.runtime.feature_kinds.schema_kinds`) of the columns that become features when `config`
    declares none. Raises DataError naming the columns whose Arrow type has no feature kind, or when no column
    is left."""
    kinds = schema_kinds(schema, config.not_features)
    bad = untyped(schema, kinds)
    if bad:
        raise DataError(f"{config.path}: no feature kind for column(s) {bad}; list them in data.exclude, or declare "
                        f"the feature columns (data.numeric, data.binary, data.categorical)")  # fmt: skip
    if not kinds:
        raise DataError(f"{config.path}: no feature columns: each of {schema.names} is a key, the label, a "
                        f"condition or excluded")  # fmt: skip
    return kinds


def zero_one_columns(path: str, columns: list[str]) -> set[str]:
    """The integer `columns` whose values (nulls aside) are all 0 or 1: one Ray Data min/max aggregation."""
    if not columns:
        return set()
    result = ray.data.read_parquet(path).select_columns(columns).aggregate(*map(Min, columns), *map(Max, columns))
    low, high = ({c: result[f"{f}({c})"] for c in columns} for f in ("min", "max"))
    return {c for c in columns if low[c] is not None and low[c] >= 0 and high[c] <= 1}


def declare_features(config: DataConfig) -> DataConfig:
    """`config` with its feature columns declared: as given, or, when it declares none, every other column typed
    from the Parquet schema (`inferred_kinds`; integer columns by their values, `zero_one_columns`). Prints one
    line saying which columns were inferred."""
    if not config.infers_features:
        return config
    kinds = inferred_kinds(config, open_parquet(config.path).schema)
    types = feature_types(kinds, zero_one_columns(config.path, [c for c, k in kinds.items() if k == INTEGER]))
    print(f"feature columns inferred from the schema of {config.path}: {describe(types)}", flush=True)
    return dataclasses.replace(config, numeric=types.numeric, binary=types.binary, categorical=types.categorical)


def check_training_data(config: DataConfig) -> int:
    """`check_parquet` for the training config's columns (with inferred features: the schema's columns that will
    be typed, `inferred_kinds`); returns the row count."""
    inputs = config.inputs
    if config.infers_features:
        inputs = tuple(inferred_kinds(config, open_parquet(config.path).schema))
    required = (*inputs, *config.conditions, *config.key)
    numeric = (*config.numeric, *config.binary, *config.condition_numeric)
    return check_parquet(config.path, required, numeric, config.image.preprocessor() if config.image else None)


def read_rows(config: DataConfig) -> ray.data.Dataset:
    """The declared columns (features or image, conditions, keys, label) as a lazy Ray dataset."""
    columns = [*config.inputs, *config.conditions, *config.key, *([config.label] if config.label else [])]
    return ray.data.read_parquet(config.path, columns=columns)


class ImageProblems:
    """Ray Data batch function: the rows whose image cannot be used, as their keys and `problem`."""

    def __init__(self, image: ImagePreprocessor, key: tuple[str, ...]) -> None:
        self.image = image
        self.key = list(key)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        problems = pd.Series(self.image.problems(batch), index=batch.index, dtype=object)
        bad = problems.notna()
        return batch.loc[bad, self.key].astype(str).assign(problem=problems[bad])


def check_images(ds: ray.data.Dataset, config: DataConfig) -> None:
    """One Ray Data pass over the rows' images; raises DataError with the count of unusable images (missing,
    wrong size, NaN/inf, out of range) and the first one's keys and problem."""
    bad = ds.map_batches(ImageProblems(config.image.preprocessor(), config.key), batch_format="pandas").materialize()
    count = bad.count()
    if count:
        first = bad.take(1)[0]
        keys = ", ".join(f"{k}={first[k]}" for k in config.key)
        raise DataError(
            f"{config.path}: {count} image(s) cannot be used for training; first {keys}: {first['problem']}"
        )


def split_bucket(batch: pd.DataFrame, key: tuple[str, ...], seed: int) -> np.ndarray:
    """A stable per-row bucket in [0, SPLIT_BUCKETS) from the key columns' values: (N,)."""
    salt = hashlib.sha256(str(seed).encode()).hexdigest()[:16]
    hashes = pd.util.hash_pandas_object(batch[list(key)], index=False, hash_key=salt).to_numpy()
    return (hashes % SPLIT_BUCKETS).astype(np.int64)


def split_rows(ds: ray.data.Dataset, config: DataConfig) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """(train, validation): each row goes by the hash of its split key, the same on every run and block layout.

    Rows labelled anomalous (label 1) never train the model; in the validation split they stay, to be found.
    """
    cut = int(config.validation_fraction * SPLIT_BUCKETS)

    def keep(batch: pd.DataFrame, validation: bool) -> pd.DataFrame:
        in_validation = split_bucket(batch, config.split_key, config.split_seed) < cut
        rows = batch[in_validation == validation]
        return rows if validation or not config.label else rows[rows[config.label] != 1]

    train = ds.map_batches(keep, fn_kwargs={"validation": False}, batch_format="pandas")
    validation = ds.map_batches(keep, fn_kwargs={"validation": True}, batch_format="pandas")
    return train, validation


def _as_statistics_input(
    batch: pd.DataFrame, numeric: list[str], binary: list[str], categorical: list[str]
) -> pd.DataFrame:
    """A batch of N raw rows as the columns the aggregations read, the values they must skip as nulls.

    Numeric: float64, null unless `usable` (finite, at most MAX_MAGNITUDE), as `Preprocessor.fit` counts them:
    no huge value reaches the sums. Binary: float64, null unless finite (other values are checked for 0/1).
    Categorical: `canonical_labels` (None when missing), and beside each, under KIND_PREFIX + column, the
    values' `label_kind`s, from which the driver learns the column's kind.
    """
    out = pd.DataFrame(index=batch.index)
    for column in [*numeric, *binary]:
        values = pd.to_numeric(batch[column], errors="coerce").astype("float64")
        keep = usable(values.to_numpy()) if column in numeric else np.isfinite(values.to_numpy())
        out[column] = values.where(keep)
    for column in categorical:
        out[column] = canonical_labels(batch[column])
        out[KIND_PREFIX + column] = [label_kind(v) for v in batch[column].to_numpy(dtype=object)]
    return out


def fit_preprocessor(
    train: ray.data.Dataset,
    numeric: tuple[str, ...],
    binary: tuple[str, ...],
    categorical: tuple[str, ...],
    missing: str,
) -> Preprocessor:
    """A Preprocessor fitted with one pass of Ray Data aggregations over the training rows, to the statistics
    `Preprocessor.fit` would compute on them in one process.

    Raises DataError for a column with no usable value or a binary column with values other than 0/1.
    """
    pre = Preprocessor(numeric, binary, categorical, missing)
    moment_columns = [*numeric, *binary]
    stats_input = train.map_batches(
        _as_statistics_input,
        fn_kwargs={"numeric": list(numeric), "binary": list(binary), "categorical": list(categorical)},
        batch_format="pandas",
    )
    aggregations = [Count(on=c, ignore_nulls=True) for c in moment_columns]
    aggregations += [Mean(on=c, ignore_nulls=True) for c in moment_columns]
    aggregations += [Std(on=c, ddof=0, ignore_nulls=True) for c in moment_columns]
    aggregations += [Unique(on=c, ignore_nulls=True) for c in [*binary, *categorical]]
    aggregations += [Unique(on=KIND_PREFIX + c, ignore_nulls=True) for c in categorical]
    result: dict[str, Any] = stats_input.aggregate(*aggregations)
    moments = {c: (result[f"count({c})"], result[f"mean({c})"], result[f"std({c})"]) for c in moment_columns}
    empty = [c for c, (count, _, _) in moments.items() if not count]
    if empty:
        raise DataError(
            f"column(s) {empty} have no finite value in the training rows (of magnitude up to {MAX_MAGNITUDE:g})"
        )
    for column in binary:
        other = sorted(set(result[f"unique({column})"]) - {0.0, 1.0})
        if other:
            raise DataError(f"binary column {column!r} has values other than 0/1, e.g. {other[:3]}")
    categories = {c: result[f"unique({c})"] for c in categorical}
    kinds = {c: column_label_kind(result[f"unique({KIND_PREFIX}{c})"]) for c in categorical}
    return pre.fit_statistics(moments, categories, kinds)


def left_out_rows(batch: pd.DataFrame, preprocessors: list[Preprocessor]) -> np.ndarray:
    """(N,) bool: the rows of a batch of N raw training rows that training leaves out: a numeric or binary
    value that is infinite or beyond MAX_MAGNITUDE (left out of the statistics too) or out of the training
    range (`Preprocessor.out_of_range_mask`). Missing values (null, NaN) are the missing policy's to handle."""
    bad = np.zeros(len(batch), dtype=bool)
    for pre in preprocessors:
        for column in [*pre.numeric, *pre.binary]:
            values = pd.to_numeric(batch[column], errors="coerce").astype("float64").to_numpy()
            bad |= ~np.isnan(values) & ~usable(values)
        for mask in pre.out_of_range_mask(batch).values():
            bad |= mask
    return bad


def _left_out_count(batch: pd.DataFrame, preprocessors: list[Preprocessor]) -> pd.DataFrame:
    return pd.DataFrame({"left_out": [int(left_out_rows(batch, preprocessors).sum())]})


def report_left_out(
    ds: ray.data.Dataset, features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None
) -> int:
    """Count (one Ray Data pass, a sum on the driver) the rows of `ds` that `encode_rows` leaves out, and print
    the count when there are any; returns it."""
    preprocessors = table_preprocessors(features, condition)
    if not preprocessors:
        return 0
    counts = ds.map_batches(_left_out_count, fn_kwargs={"preprocessors": preprocessors}, batch_format="pandas")
    left_out = int(counts.sum("left_out") or 0)
    if left_out:
        print(f"{left_out:,} training rows with non-finite values left out (infinite, beyond {MAX_MAGNITUDE:g} or"
              f" more than {Z_BOUND:g} training stds off the mean)", flush=True)  # fmt: skip
    return left_out


def table_preprocessors(
    features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None
) -> list[Preprocessor]:
    """The column preprocessors of a model: its features unless they are an image column, and its condition."""
    return [p for p in (features, condition) if isinstance(p, Preprocessor)]


class EncodeRows:
    """Ray Data batch function: N raw rows -> {"x": (M, D) float32[, "c": (M, K)][, "label": (M,)]}, the
    M <= N rows that `left_out_rows` keeps."""

    def __init__(
        self, features: Preprocessor | ImagePreprocessor, condition: Preprocessor | None, label: str | None
    ) -> None:
        self.features = features
        self.condition = condition
        self.label = label
        self.tables = table_preprocessors(features, condition)

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        batch = batch[~left_out_rows(batch, self.tables)]
        encoded = {"x": self.features.transform(batch)}
        if self.condition is not None:
            encoded["c"] = self.condition.transform(batch)
        if self.label is not None:
            encoded["label"] = batch[self.label].to_numpy()
        return encoded


def encode_rows(
    ds: ray.data.Dataset,
    config: DataConfig,
    features: Preprocessor | ImagePreprocessor,
    condition: Preprocessor | None,
) -> ray.data.Dataset:
    """The model inputs of `ds`'s rows but those `left_out_rows` finds (`report_left_out` counts them), and the
    label, for plots and evaluation; materialized in the object store (read once, iterated every epoch) when
    `config.materialize` is set."""
    encoded = ds.map_batches(EncodeRows(features, condition, config.label), batch_format="pandas")
    return encoded.materialize() if config.materialize else encoded


@dataclass
class PreparedData:
    """The split, encoded rows and the preprocessing fitted on the training split (what every trial shares)."""

    train: ray.data.Dataset
    validation: ray.data.Dataset
    features: Preprocessor | ImagePreprocessor
    condition: Preprocessor | None

    @functools.cached_property
    def train_rows(self) -> int:
        """The number of encoded training rows (a Ray Data count); DataError when there are none."""
        rows = self.train.count()
        if not rows:
            raise DataError("no training rows: every row went to validation, was labelled an anomaly or left out")
        return rows

    @property
    def layout(self) -> DataLayout:
        condition_dim = 0 if self.condition is None else sum(b.width for b in self.condition.layout_blocks())
        image_shape = self.features.shape if isinstance(self.features, ImagePreprocessor) else None
        return DataLayout(self.features.layout_blocks(), image_shape=image_shape, condition_dim=condition_dim)


def prepare_data(data: DataConfig) -> PreparedData:
    """Read, split (validation by key hash), fit the preprocessing on the training rows and encode both splits.
    Image rows are checked first: one unusable image (wrong size, NaN) fails the run with a DataError. Rows
    with an infinite or out-of-range number are left out of both splits, their count printed."""
    rows = read_rows(data)
    if data.image:
        check_images(rows, data)
    train_rows, val_rows = split_rows(rows, data)
    if data.image:
        features = data.image.preprocessor()
    else:
        features = fit_preprocessor(train_rows, data.numeric, data.binary, data.categorical, data.missing)
    condition = None
    if data.conditions:
        condition = fit_preprocessor(train_rows, data.condition_numeric, (), data.condition_categorical, "impute")
    report_left_out(rows, features, condition)
    return PreparedData(encode_rows(train_rows, data, features, condition),
                        encode_rows(val_rows, data, features, condition), features, condition)  # fmt: skip
