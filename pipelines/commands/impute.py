"""`python -m pipelines impute --config pipelines/configs/impute.yaml model=NAME@ALIAS input=rows.parquet
output=outputs/imputed.parquet [samples=8 iterations=50 method=metropolis return_samples=false truth=...]`

Fills the missing (null, NaN or infinite) feature values of Parquet rows with a registered model:
resolve the model -> stream the rows in chunks (pyarrow, in this one process: no Ray) -> each chunk through
`vae.imputation.impute_table` (Metropolis-within-Gibbs chains on z and the missing values given the observed ones;
rows with no observed feature are drawn from the prior) -> every input column, with only the missing entries
replaced, appended to one Parquet file renamed into place at the end. With `return_samples=true` the file holds
each chain's last draw instead, each chunk's rows repeated once per chain with an `imputation` column. With
`truth=` (the same rows complete) it also prints the RMSE of the imputed numeric values against the truth, beside
that of mean imputation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from pipelines.cli import run_config_command
from pipelines.runtime.parquet_checks import DataError, open_merged, unreadable
from pipelines.settings.model_jobs import ImputeConfig
from pipelines.settings.yaml_configs import resolve_path
from pipelines.storage.arrow_types import to_arrow
from pipelines.storage.parquet_file import write_parquet_atomically
from pipelines.tracking.registry import load_model_spec
from pipelines.tracking.runs import resolve_tracking_uri
from vae import ConfigError, Detector, Preprocessor
from vae.imputation import Acceptance, TableImputation, impute_table

DRAW_COLUMN = "imputation"
CHUNK_BATCHES = 16  # imputation batches (`batch_size` rows each) read, imputed and written at a time
PROGRESS_EVERY_S = 5.0


@dataclass
class ImputeOutcome:
    model: str  # NAME/VERSION
    rows: int  # input rows
    filled: dict[str, int]  # column -> entries imputed
    acceptance: float
    output: str
    rmse: dict[str, float] | None  # {"model": ..., "mean": ...} when `truth` was given


def open_rows(path: str, columns: list[str]) -> pads.Dataset:
    """The Parquet input with its files' types merged (`open_merged`), checked from its metadata: it holds
    `columns` and at least one row."""
    dataset = open_merged(path)
    absent = [c for c in columns if c not in dataset.schema.names]
    if absent:
        raise DataError(f"{path}: missing column(s) {absent}; it has {dataset.schema.names}")
    if dataset.count_rows() == 0:
        raise DataError(f"{path}: no rows")
    return dataset


def row_chunks(path: str, dataset: pads.Dataset, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of `dataset` (read from `path`) in file order as tables of exactly `rows` rows (the last may hold
    fewer); in memory at once: one chunk and one record batch."""
    pending: list[pa.RecordBatch] = []
    held = 0
    try:
        for batch in dataset.to_batches(columns=columns, batch_size=rows):
            pending.append(batch)
            held += batch.num_rows
            while held >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending, held = rest.to_batches(), rest.num_rows
    except (OSError, pa.ArrowException) as err:  # corrupt pages: pyarrow's OSError ("Corrupt snappy ...")
        raise unreadable(path, err) from err
    if held:
        yield pa.Table.from_batches(pending)


def _numpy(table: pa.Table, columns: list[str]) -> dict[str, np.ndarray]:
    """`columns` of `table` as numpy arrays (nulls as NaN or None)."""
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _conditions(condition: Preprocessor | None, raw: dict[str, np.ndarray], path: str) -> np.ndarray | None:
    if condition is None:
        return None
    missing = {c: int(m.sum()) for c, m in condition.missing_mask(raw).items()}
    if missing:
        raise DataError(f"{path}: condition values must be present; missing (rows per column): {missing}")
    return condition.transform(raw)


def _filled_table(table: pa.Table, imputed: dict[str, np.ndarray], missing: dict[str, np.ndarray]) -> pa.Table:
    """`table` with the `missing` entries of each column taken from `imputed`, in the column's own type."""
    for column, rows in missing.items():
        original = table.column(column)
        values = to_arrow(imputed[column], original.type)
        if pa.types.is_null(original.type):
            original = original.cast(values.type)
        table = table.set_column(table.column_names.index(column), column, pc.if_else(pa.array(rows), values, original))
    return table


def _output_table(table: pa.Table, result: TableImputation, return_samples: bool) -> pa.Table:
    if not return_samples:
        return _filled_table(table, result.estimate, result.missing)
    draws = [
        _filled_table(table, draw, result.missing).append_column(DRAW_COLUMN, pa.array(np.full(table.num_rows, i)))
        for i, draw in enumerate(result.draws)
    ]
    return pa.concat_tables(draws)


def standardized_errors(
    preprocessor: Preprocessor, truth: Mapping[str, Any], imputed: Mapping[str, Any], masked: Mapping[str, np.ndarray]
) -> np.ndarray:
    """(M,) errors of the M masked numeric entries, each divided by its column's training std so that columns of
    different scales weigh alike. masked: column -> (N,) bool. DataError when the truth lacks a masked entry."""
    errors = [np.empty(0)]
    for i, column in enumerate(preprocessor.numeric):
        if column in masked and np.any(masked[column]):
            rows = np.asarray(masked[column], dtype=bool)
            true = np.asarray(truth[column], dtype=np.float64)[rows]
            if not np.isfinite(true).all():
                raise DataError(f"truth: column {column!r} lacks {int((~np.isfinite(true)).sum())} of the values "
                                "the input lacks; the truth must hold every value imputed")  # fmt: skip
            guess = np.asarray(imputed[column], dtype=np.float64)[rows]
            errors.append((guess - true) / preprocessor.std[i])
    return np.concatenate(errors)


def numeric_rmse(
    preprocessor: Preprocessor, truth: Mapping[str, Any], imputed: Mapping[str, Any], masked: Mapping[str, np.ndarray]
) -> float:
    """Root mean squared `standardized_errors`."""
    errors = standardized_errors(preprocessor, truth, imputed, masked)
    if not errors.size:
        raise ValueError("no masked numeric entry to compare")
    return float(np.sqrt(np.mean(np.square(errors))))


def mean_imputation(preprocessor: Preprocessor, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The baseline: missing numeric entries set to the training mean (other columns as given)."""
    filled = {column: np.asarray(table[column]) for column in preprocessor.columns}
    for i, column in enumerate(preprocessor.numeric):
        values = np.asarray(table[column], dtype=np.float64).copy()
        values[~np.isfinite(values)] = preprocessor.mean[i]
        filled[column] = values
    return filled


@dataclass
class _Totals:
    """What the chunks of one run add up to."""

    rows: int = 0
    filled: Counter = field(default_factory=Counter)  # column -> entries imputed
    acceptance: Acceptance = Acceptance()
    squared: Counter = field(default_factory=Counter)  # "model" / "mean" -> sum of squared standardized errors
    compared: int = 0  # masked numeric entries compared with the truth

    def add(self, rows: int, result: TableImputation) -> None:
        self.rows += rows
        self.filled.update({column: int(m.sum()) for column, m in result.missing.items()})
        self.acceptance += result.acceptance

    def compare(self, pre: Preprocessor, truth: dict, raw: dict, result: TableImputation) -> None:
        """Add the errors of the model's estimate and of mean imputation against `truth` (the chunk's rows)."""
        masked = {c: m for c, m in result.missing.items() if c in pre.numeric}
        for key, imputed in (("model", result.fill(raw)), ("mean", mean_imputation(pre, raw))):
            errors = standardized_errors(pre, truth, imputed, masked)
            self.squared[key] += float(np.square(errors).sum())
        self.compared += errors.size

    def rmse(self) -> dict[str, float] | None:
        if not self.compared:
            return None
        return {key: float(np.sqrt(self.squared[key] / self.compared)) for key in ("model", "mean")}


def _imputed_chunks(config: ImputeConfig, detector: Detector, totals: _Totals) -> Iterator[pa.Table]:
    """The output, chunk by chunk: each chunk of input rows imputed (its missing entries filled) as it is read,
    with one random stream across chunks of whole batches, so the result is that of imputing the table at once."""
    pre = detector.preprocessor
    columns = [*pre.columns, *([] if detector.condition is None else detector.condition.columns)]
    dataset = open_rows(config.input, columns)
    rows = config.batch_size * CHUNK_BATCHES
    truth = None
    if config.truth:
        truth = row_chunks(config.truth, open_rows(config.truth, pre.numeric), rows, pre.numeric)
    generator = torch.Generator(device=next(detector.model.parameters()).device).manual_seed(config.seed)
    total, started, said = dataset.count_rows(), time.perf_counter(), time.perf_counter()
    for chunk in row_chunks(config.input, dataset, rows):
        raw = _numpy(chunk, columns)
        c = _conditions(detector.condition, raw, config.input)
        try:
            result = impute_table(detector.model, pre, raw, c, iterations=config.iterations, chains=config.samples,
                                  method=config.method, seed=generator, batch_size=config.batch_size)  # fmt: skip
        except ValueError as err:  # e.g. text in a numeric column
            raise DataError(f"{config.input}: {err}") from err
        totals.add(chunk.num_rows, result)
        if truth is not None:
            expected = next(truth, None)
            if expected is None or expected.num_rows != chunk.num_rows:
                raise DataError(f"{config.truth}: the truth must hold the input's rows in the same order")
            totals.compare(pre, _numpy(expected, pre.numeric), raw, result)
        yield _output_table(chunk, result, config.return_samples)
        if time.perf_counter() - said >= PROGRESS_EVERY_S and totals.rows < total:
            said = time.perf_counter()
            print(f"imputed {totals.rows:,}/{total:,} rows  ({totals.rows / (said - started):,.0f} rows/s)", flush=True)
    if truth is not None and next(truth, None) is not None:
        raise DataError(f"{config.truth}: the truth must hold the input's rows in the same order")


def run(config: ImputeConfig) -> ImputeOutcome:
    """Impute `config.input` into `config.output` chunk by chunk (memory: one chunk of `batch_size` *
    CHUNK_BATCHES rows, not the input); raises ConfigError / DataError / TrackingError with nothing written."""
    detector, model = load_model_spec(config.model, resolve_tracking_uri(config.tracking))
    if detector.model.layout.image_shape is not None:
        raise ConfigError(f"ImputeConfig.model: {model} models images; this command imputes tabular rows")
    metadata = {"vae.model": model, "vae.method": config.method, "vae.iterations": str(config.iterations),
                "vae.samples": str(config.samples), "vae.seed": str(config.seed)}  # fmt: skip
    totals = _Totals()
    path = write_parquet_atomically(_imputed_chunks(config, detector, totals), resolve_path(config.output), metadata)
    return ImputeOutcome(model, totals.rows, dict(totals.filled), totals.acceptance.rate, str(path), totals.rmse())


def report(outcome: ImputeOutcome) -> None:
    print(f"imputed {sum(outcome.filled.values()):,} values in {outcome.rows:,} rows {outcome.filled} with "
          f"{outcome.model} (acceptance {outcome.acceptance:.2f}) -> {outcome.output}")  # fmt: skip
    if outcome.rmse:
        gain = 1 - outcome.rmse["model"] / outcome.rmse["mean"]
        print(f"RMSE on the masked numeric values (standardized): model {outcome.rmse['model']:.4f}, "
              f"mean imputation {outcome.rmse['mean']:.4f} ({gain:+.1%} lower)")  # fmt: skip


def main(argv: list[str] | None = None) -> ImputeOutcome:
    return run_config_command(
        "impute", __doc__, "impute.yaml", "input=rows.parquet samples=16", ImputeConfig, argv, run, report
    )
