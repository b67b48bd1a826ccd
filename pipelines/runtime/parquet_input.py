"""The training data with Ray Data: feature columns declared (or typed from the schema), read, split
deterministically by key, preprocessing fitted on the training split, both splits encoded.

The schema and row count are checked with pyarrow (`parquet_checks`) before Ray starts; statistics are
Ray Data aggregations over the training split, never a copy of the data on the driver.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data
from ray.data import FileShuffleConfig
from ray.data.aggregate import Count, Max, Mean, Min, Std, Unique

from pipelines.settings.yaml_configs import DataConfig
from vae import DataLayout, ImagePreprocessor, Preprocessor
from vae.labels import canonical_labels, column_label_kind, label_kind
from vae.preprocessing import float_values
from vae.value_screen import MAX_MAGNITUDE, NO_BOUNDS, screen_bounds, usable

from .feature_kinds import INTEGER, describe, feature_types, schema_kinds, untyped
from .parquet_checks import (
    DataError,
    check_label,
    check_parquet,
    check_ray_readable,
    merged_schema,
    open_parquet,
    partition_columns,
)
from .row_encoding import encode_rows, report_left_out
from .value_sample import ValueSample

SPLIT_BUCKETS = 1_000_000
# values per numeric column whose median and quartiles give its `screen_bounds` (all of them up to that many;
# beyond, a uniform sample: its quartiles place bounds 10^4 robust stds wide within a few per cent of where all
# the values would). Each block's partial is 8 kB a column, and the one task that combines them holds them all:
# 1,000 blocks (~128 GB of Parquet) of 100 numeric columns is 800 MB there
SCREEN_SAMPLE = 1_000
KIND_PREFIX = "__label_kind__:"  # the statistics input's column of each categorical value's label kind


def inferred_kinds(config: DataConfig, schema: pa.Schema, partitions: Collection[str] = ()) -> dict[str, str]:
    """column -> kind (`pipelines.runtime.feature_kinds.schema_kinds`) of the columns that become features when `config`
    declares none; hive `partitions` keys are none (a path's `date=...` would be a category no later night has seen,
    and a night's own directory lacks it). Raises DataError naming the excluded columns the schema lacks, the columns
    whose Arrow type has no feature kind, or when no column is left."""
    absent = [c for c in config.exclude if c not in schema.names]
    if absent:  # a misspelt name would leave the column it meant (an id) a feature
        raise DataError(f"{config.path}: data.exclude names column(s) {absent} the data does not have; it has "
                        f"{schema.names}")  # fmt: skip
    kinds = schema_kinds(schema, (*config.not_features, *partitions))
    bad = untyped(schema, kinds)
    if bad:
        raise DataError(f"{config.path}: no feature kind for column(s) {bad}; list them in data.exclude, or declare "
                        f"the feature columns (data.numeric, data.binary, data.categorical)")  # fmt: skip
    if not kinds:
        raise DataError(f"{config.path}: no feature columns: each of {schema.names} is a key, the label, a "
                        f"condition, excluded or a partition key")  # fmt: skip
    return kinds


def _inferred_kinds(config: DataConfig) -> tuple[dict[str, str], list[str]]:
    """`inferred_kinds` of the Parquet at `config.path`, and its hive partition keys."""
    dataset = open_parquet(config.path)
    partitions = partition_columns(dataset)
    return inferred_kinds(config, merged_schema(dataset), partitions), partitions


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
    kinds, partitions = _inferred_kinds(config)
    types = feature_types(kinds, zero_one_columns(config.path, [c for c, k in kinds.items() if k == INTEGER]))
    keys = [k for k in partitions if k not in config.not_features]
    left = f"; hive partition key(s) {keys} are no features (declare the features to use one)" if keys else ""
    print(f"feature columns inferred from the schema of {config.path}: {describe(types)}{left}", flush=True)
    return dataclasses.replace(config, numeric=types.numeric, binary=types.binary, categorical=types.categorical)


def check_training_data(config: DataConfig) -> int:
    """`check_parquet` for the training config's columns (with inferred features: the schema's columns that will
    be typed, `inferred_kinds`), its keys (no lists or structs), its label (`check_label`) and that the validation
    split can hold a row; returns the row count."""
    check_ray_readable(config.path)
    inputs = config.inputs
    if config.infers_features:
        inputs = tuple(_inferred_kinds(config)[0])
    required = (*inputs, *config.conditions, *config.key, *([config.label] if config.label else []))
    numeric = (*config.numeric, *config.binary, *config.condition_numeric)
    checked = check_parquet(config.path, required, numeric, config.image.preprocessor() if config.image else None)
    nested = [k for k in config.key if pa.types.is_nested(checked.schema.field(k).type)]
    if nested:  # the split hashes each row's key: a list or struct fails inside Ray Data's tasks
        raise DataError(f"{config.path}: key column(s) {nested} hold lists, structs or maps; a key must be numbers, "
                        "text, dates or bytes")  # fmt: skip
    if config.label:
        check_label(config.path, checked.schema, config.label)
    expected = checked.rows * int(config.validation_fraction * SPLIT_BUCKETS) / SPLIT_BUCKETS  # as split_rows cuts
    if expected < 1:
        raise DataError(f"data.validation_fraction={config.validation_fraction:g} of {checked.rows:,} rows leaves "
                        f"{expected:.2g} rows to calibrate the threshold on, expected: raise it")  # fmt: skip
    return checked.rows


def read_rows(config: DataConfig) -> ray.data.Dataset:
    """The declared columns (features or image, conditions, keys, label) as a lazy Ray dataset whose files are
    read in another order on every execution (every epoch of a streamed shard), seeded by `data.split_seed`: rows
    stored in order (by date, by customer) do not reach a streaming worker in the same order each epoch."""
    columns = [*config.inputs, *config.conditions, *config.key, *([config.label] if config.label else [])]
    files = FileShuffleConfig(seed=config.split_seed, reseed_after_execution=True)
    return ray.data.read_parquet(config.path, shuffle=files).select_columns(columns)


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
    """A stable per-row bucket in [0, SPLIT_BUCKETS) from the key columns' values: (N,), whatever else the batch
    holds: integer keys are hashed as nullable integers, which hash a present value as numpy's integers do (with a
    null key in its batch, an Arrow-backed integer column would be hashed as floats, and its other rows would
    change split between passes over differently grouped blocks)."""
    salt = hashlib.sha256(str(seed).encode()).hexdigest()[:16]
    keys = batch[list(key)].apply(_as_nullable_integers)
    hashes = pd.util.hash_pandas_object(keys, index=False, hash_key=salt).to_numpy()
    return (hashes % SPLIT_BUCKETS).astype(np.int64)


def _as_nullable_integers(column: pd.Series) -> pd.Series:
    """An integer column as pandas' nullable integers of the same width (int32 -> Int32); others as they are."""
    if not pd.api.types.is_integer_dtype(column.dtype):
        return column
    width = np.dtype(getattr(column.dtype, "numpy_dtype", column.dtype))
    return column.astype(f"{'U' if width.kind == 'u' else ''}Int{8 * width.itemsize}")


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
    batch: pd.DataFrame,
    numeric: list[str],
    binary: list[str],
    categorical: list[str],
    bounds: dict[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """A batch of N raw rows as the columns the aggregations read, the values they must skip as nulls.

    Numeric: float64, null unless `usable` (finite, at most MAX_MAGNITUDE) and within its `bounds` (given: the
    `screen_bounds`), as `Preprocessor.fit` counts them: no huge value reaches the sums. Binary: float64, null
    unless finite (other values are checked for 0/1). Categorical: `canonical_labels` (None when missing), and
    beside each, under KIND_PREFIX + column, the values' `label_kind`s, from which the driver learns the kind.
    """
    out = pd.DataFrame(index=batch.index)
    for column in [*numeric, *binary]:
        numbers = float_values(batch, column)  # as the library reads them (float16 and decimals with nulls too)
        values = pd.Series(numbers, index=batch.index)
        keep = usable(numbers, (bounds or {}).get(column, NO_BOUNDS)) if column in numeric else np.isfinite(numbers)
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
    """A Preprocessor fitted with Ray Data aggregations over the training rows, to the statistics
    `Preprocessor.fit` would compute on them in one process: one pass, and a second for the moments of the
    numeric columns where a value lies outside its `screen_bounds` (a fill value such as 9.97e36), which the
    first pass finds from a sample of SCREEN_SAMPLE values per column (every value up to that many).

    Raises DataError for a column with no usable value, a binary column with values other than 0/1 or a
    categorical one of ids or free text (`vae.labels.check_category_count`).
    """
    pre = Preprocessor(numeric, binary, categorical, missing)
    columns = {"numeric": list(numeric), "binary": list(binary), "categorical": list(categorical)}
    stats_input = train.map_batches(_as_statistics_input, fn_kwargs=columns, batch_format="pandas")
    aggregations = _moment_aggregations([*numeric, *binary])
    aggregations += [ValueSample(on=c, size=SCREEN_SAMPLE) for c in numeric]
    aggregations += [agg(on=c, ignore_nulls=True) for c in numeric for agg in (Min, Max)]
    aggregations += [Unique(on=c, ignore_nulls=True) for c in binary]
    aggregations += [agg(on=c, ignore_nulls=True) for c in categorical for agg in (Unique, Count)]
    aggregations += [Unique(on=KIND_PREFIX + c, ignore_nulls=True) for c in categorical]
    result: dict[str, Any] = stats_input.aggregate(*aggregations)
    moments = _moments(result, [*numeric, *binary])
    empty = [c for c, (count, _, _) in moments.items() if not count]
    if empty:
        raise DataError(
            f"column(s) {empty} have no finite value in the training rows (of magnitude up to {MAX_MAGNITUDE:g})"
        )
    bounds = {c: screen_bounds(np.asarray(result[f"sample({c})"], dtype=np.float64)) for c in numeric}
    screened = [c for c in numeric if result[f"min({c})"] < bounds[c][0] or result[f"max({c})"] > bounds[c][1]]
    if screened:
        only = {"numeric": screened, "binary": [], "categorical": [], "bounds": bounds}
        again = train.map_batches(_as_statistics_input, fn_kwargs=only, batch_format="pandas")
        moments |= _moments(again.aggregate(*_moment_aggregations(screened)), screened)
    for column in binary:
        other = sorted(set(result[f"unique({column})"]) - {0.0, 1.0})
        if other:
            raise DataError(f"binary column {column!r} has values other than 0/1, e.g. {other[:3]}")
    categories = {c: result[f"unique({c})"] for c in categorical}
    empty = [c for c in categorical if not categories[c]]
    if empty:
        raise DataError(f"categorical column(s) {empty} have no value in the training rows")
    kinds = {c: column_label_kind(result[f"unique({KIND_PREFIX}{c})"]) for c in categorical}
    labelled = {c: result[f"count({c})"] for c in categorical}
    try:
        return pre.fit_statistics(moments, categories, kinds, bounds, labelled)
    except ValueError as err:  # a categorical column of ids or free text (`check_category_count`)
        raise DataError(str(err)) from err


def _moment_aggregations(columns: list[str]) -> list[Any]:
    return [agg(on=c, ignore_nulls=True) for agg in (Count, Mean) for c in columns] + [
        Std(on=c, ddof=0, ignore_nulls=True) for c in columns
    ]


def _moments(result: dict[str, Any], columns: list[str]) -> dict[str, tuple[int, float, float]]:
    """Per column, (count, mean, population std) from the results of `_moment_aggregations`."""
    return {c: (result[f"count({c})"], result[f"mean({c})"], result[f"std({c})"]) for c in columns}


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
        return _nonempty_count(
            self.train, "no training rows: every row went to validation, was labelled an anomaly or left out"
        )

    @functools.cached_property
    def validation_rows(self) -> int:
        """The number of encoded validation rows (a Ray Data count); DataError when there are none."""
        return _nonempty_count(
            self.validation, "no validation rows to calibrate the threshold on: raise data.validation_fraction"
        )

    @property
    def layout(self) -> DataLayout:
        condition_dim = 0 if self.condition is None else sum(b.width for b in self.condition.layout_blocks())
        image_shape = self.features.shape if isinstance(self.features, ImagePreprocessor) else None
        return DataLayout(self.features.layout_blocks(), image_shape=image_shape, condition_dim=condition_dim)


def _nonempty_count(ds: ray.data.Dataset, empty: str) -> int:
    rows = ds.count()
    if not rows:
        raise DataError(empty)
    return rows


def prepare_data(data: DataConfig) -> PreparedData:
    """Read, split (validation by key hash), fit the preprocessing on the training rows and encode both splits.
    Image rows are checked first: one unusable image (wrong size, NaN) fails the run with a DataError. Rows
    with an infinite, huge or out-of-range number (`Preprocessor.unusable_rows`) are left out of both splits, their
    count printed."""
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
