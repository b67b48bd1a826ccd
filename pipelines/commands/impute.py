"""`python -m pipelines impute --config pipelines/configs/impute.yaml model=NAME@ALIAS input=rows.parquet
output=outputs/imputed.parquet [samples=8 iterations=50 method=metropolis return_samples=false truth=...]`

Fills the missing (null, NaN or infinite) feature values of Parquet rows with a registered model:
resolve the model -> read the rows (pyarrow, in this one process: no Ray) -> `vae.imputation.impute_table`
(Metropolis-within-Gibbs chains on z and the missing values given the observed ones; rows with no observed
feature are drawn from the prior) -> write every input column, with only the missing entries replaced, to one
Parquet file atomically. With `return_samples=true` the file holds each chain's last draw instead, the rows
repeated once per chain with an `imputation` column. With `truth=` (the same rows complete) it also prints the
RMSE of the imputed numeric values against the truth, beside that of mean imputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.cli import run_config_command
from pipelines.runtime.parquet_checks import DataError, open_parquet
from pipelines.settings.model_jobs import ImputeConfig
from pipelines.settings.yaml_configs import resolve_path
from pipelines.storage.arrow_types import to_arrow
from pipelines.storage.parquet_file import write_parquet_atomically
from pipelines.tracking.registry import load_model_spec
from pipelines.tracking.runs import resolve_tracking_uri
from vae import ConfigError, Preprocessor
from vae.imputation import TableImputation, impute_table

DRAW_COLUMN = "imputation"


@dataclass
class ImputeOutcome:
    model: str  # NAME/VERSION
    rows: int  # input rows
    filled: dict[str, int]  # column -> entries imputed
    acceptance: float
    output: str
    rmse: dict[str, float] | None  # {"model": ..., "mean": ...} when `truth` was given


def read_rows(path: str, columns: list[str]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The whole Parquet input, and its `columns` as numpy arrays (nulls as NaN or None)."""
    try:
        table = open_parquet(path).to_table()
    except pa.ArrowException as err:
        raise DataError(f"cannot read Parquet at {path}: {str(err).splitlines()[0]}") from err
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise DataError(f"{path}: missing column(s) {absent}; it has {table.column_names}")
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    return table, {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


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


def numeric_rmse(
    preprocessor: Preprocessor, truth: Mapping[str, Any], imputed: Mapping[str, Any], masked: Mapping[str, np.ndarray]
) -> float:
    """Root mean squared error over the masked numeric entries, in standardized units (each column divided by
    its training std), so columns of different scales weigh alike. masked: column -> (N,) bool."""
    errors = []
    for i, column in enumerate(preprocessor.numeric):
        if column in masked and np.any(masked[column]):
            rows = np.asarray(masked[column], dtype=bool)
            true = np.asarray(truth[column], dtype=np.float64)[rows]
            guess = np.asarray(imputed[column], dtype=np.float64)[rows]
            errors.append((guess - true) / preprocessor.std[i])
    if not errors:
        raise ValueError("no masked numeric entry to compare")
    return float(np.sqrt(np.mean(np.square(np.concatenate(errors)))))


def mean_imputation(preprocessor: Preprocessor, table: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The baseline: missing numeric entries set to the training mean (other columns as given)."""
    filled = {column: np.asarray(table[column]) for column in preprocessor.columns}
    for i, column in enumerate(preprocessor.numeric):
        values = np.asarray(table[column], dtype=np.float64).copy()
        values[~np.isfinite(values)] = preprocessor.mean[i]
        filled[column] = values
    return filled


def _rmse(config: ImputeConfig, pre: Preprocessor, raw: dict[str, np.ndarray], result: TableImputation) -> dict:
    """Imputation RMSE (standardized units) of the model and of mean imputation against `config.truth`."""
    _, truth = read_rows(config.truth, pre.numeric)
    if len(truth[pre.numeric[0]]) != len(raw[pre.columns[0]]):
        raise DataError(f"{config.truth}: the truth must hold the input's rows in the same order")
    masked = {c: m for c, m in result.missing.items() if c in pre.numeric}
    return {
        "model": numeric_rmse(pre, truth, result.fill(raw), masked),
        "mean": numeric_rmse(pre, truth, mean_imputation(pre, raw), masked),
    }


def run(config: ImputeConfig) -> ImputeOutcome:
    """Impute `config.input` into `config.output`; raises ConfigError / DataError / TrackingError before writing."""
    detector, model = load_model_spec(config.model, resolve_tracking_uri(config.tracking))
    if detector.model.layout.image_shape is not None:
        raise ConfigError(f"ImputeConfig.model: {model} models images; this command imputes tabular rows")
    pre = detector.preprocessor
    conditions = [] if detector.condition is None else detector.condition.columns
    table, raw = read_rows(config.input, [*pre.columns, *conditions])
    c = _conditions(detector.condition, raw, config.input)
    try:
        result = impute_table(detector.model, pre, raw, c, iterations=config.iterations, chains=config.samples,
                              method=config.method, seed=config.seed, batch_size=config.batch_size)  # fmt: skip
    except ValueError as err:  # e.g. text in a numeric column
        raise DataError(f"{config.input}: {err}") from err
    rmse = None
    if config.truth and any(column in pre.numeric for column in result.missing):
        rmse = _rmse(config, pre, raw, result)
    metadata = {"vae.model": model, "vae.method": config.method, "vae.iterations": str(config.iterations),
                "vae.samples": str(config.samples), "vae.seed": str(config.seed)}  # fmt: skip
    output = _output_table(table, result, config.return_samples)
    path = write_parquet_atomically(output, resolve_path(config.output), metadata)
    filled = {column: int(rows.sum()) for column, rows in result.missing.items()}
    return ImputeOutcome(model, table.num_rows, filled, result.acceptance, str(path), rmse)


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
