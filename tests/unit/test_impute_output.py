"""The impute command's output table: only missing entries replaced, every column in its own Arrow type."""

import numpy as np
import pyarrow as pa

from pipelines.commands.impute import DRAW_COLUMN, _output_table
from vae.imputation import TableImputation


def _input() -> pa.Table:
    return pa.table({
        "row_id": pa.array([10, 11, 12], pa.int64()),
        "age": pa.array([41, None, 2**60 + 1], pa.int64()),  # a value float64 cannot hold exactly
        "income": pa.array([1.5, float("nan"), None], pa.float64()),
        "colour": pa.array(["red", None, "purple"], pa.large_string()),
        "grade": pa.array([None, 3, 1], pa.int32()),
        "empty": pa.array([None, None, None], pa.null()),
    })  # fmt: skip


def _imputation() -> TableImputation:
    def columns(shift: float) -> dict[str, np.ndarray]:
        return {"age": np.array([0.0, 37.6 + shift, 0.0]), "income": np.array([0.0, 2.0 + shift, 3.0 + shift]),
                "colour": np.array(["blue", "green", "blue"], dtype=object),
                "grade": np.array(["2", "1", "1"], dtype=object),
                "empty": np.array([0.5 + shift, 1.5, 2.5])}  # fmt: skip

    missing = {"age": np.array([False, True, False]), "income": np.array([False, True, True]),
               "colour": np.array([False, True, False]), "grade": np.array([True, False, False]),
               "empty": np.array([True, True, True])}  # fmt: skip
    return TableImputation(columns(0.0), [columns(0.0), columns(10.0)], missing, acceptance=1.0)


def test_missing_entries_take_the_estimate_in_the_column_type():
    table = _input()
    out = _output_table(table, _imputation(), return_samples=False)
    assert out.schema.field("age").type == pa.int64() and out.schema.field("grade").type == pa.int32()
    assert out.schema.field("colour").type == pa.large_string() and out.schema.field("empty").type == pa.float64()
    assert out.column("age").to_pylist() == [41, 38, 2**60 + 1]  # rounded; the observed big value exact
    assert out.column("income").to_pylist() == [1.5, 2.0, 3.0]
    assert out.column("colour").to_pylist() == ["red", "green", "purple"]
    assert out.column("grade").to_pylist() == [2, 3, 1]
    assert out.column("empty").to_pylist() == [0.5, 1.5, 2.5]
    assert out.column("row_id").equals(table.column("row_id"))


def test_return_samples_repeats_the_rows_once_per_chain():
    out = _output_table(_input(), _imputation(), return_samples=True)
    assert out.num_rows == 6 and out.column(DRAW_COLUMN).to_pylist() == [0, 0, 0, 1, 1, 1]
    assert out.column("income").to_pylist() == [1.5, 2.0, 3.0, 1.5, 12.0, 13.0]
    assert out.column("row_id").to_pylist() == [10, 11, 12] * 2
