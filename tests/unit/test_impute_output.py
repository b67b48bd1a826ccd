"""The impute command's output: only missing entries replaced, every column in its own Arrow type, and the
same result streamed chunk by chunk as imputed at once."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.commands.impute import (
    CHUNK_BATCHES,
    DRAW_COLUMN,
    _imputed_chunks,
    _output_table,
    _Totals,
    mean_imputation,
    numeric_rmse,
    open_rows,
    row_chunks,
)
from pipelines.runtime.parquet_checks import DataError
from pipelines.settings.model_jobs import ImputeConfig
from pipelines.storage.parquet_file import write_parquet_atomically
from vae.imputation import Acceptance, TableImputation, impute_table

from .tabular_models import mixed_table, train_detector


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
    return TableImputation(columns(0.0), [columns(0.0), columns(10.0)], missing, Acceptance())


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


@pytest.fixture(scope="module")
def detector():
    return train_detector(mixed_table(), conditional=True, epochs=2)


def test_chunked_imputation_equals_imputing_the_table_at_once(detector, tmp_path):
    """The command reads, imputes and writes chunk by chunk (here 4 chunks, across 3 files and row
    groups that do not line up with them); with one random stream the file equals one call on the whole table,
    and the totals (rows, entries filled, acceptance, RMSE against the truth) add up to the whole table's."""
    complete = pa.table({"row_id": np.arange(700), **mixed_table(n=700, seed=1)})
    rng = np.random.default_rng(0)
    rows = complete
    for column in ("income", "age", "colour"):
        hole = pa.scalar(None, rows.schema.field(column).type)
        holed = pc.if_else(pa.array(rng.random(700) < 0.3), hole, rows[column])
        rows = rows.set_column(rows.schema.get_field_index(column), column, holed)
    (tmp_path / "in").mkdir()
    for i, (start, stop) in enumerate([(0, 250), (250, 251), (251, 700)]):
        pq.write_table(rows.slice(start, stop - start), tmp_path / "in" / f"part-{i}.parquet", row_group_size=97)
    pq.write_table(complete, tmp_path / "truth.parquet", row_group_size=61)
    config = ImputeConfig(input=str(tmp_path / "in"), truth=str(tmp_path / "truth.parquet"), iterations=6,
                          samples=3, seed=5, batch_size=12)  # fmt: skip
    assert 3 * config.batch_size * CHUNK_BATCHES < 700 < 4 * config.batch_size * CHUNK_BATCHES  # 4 chunks
    totals = _Totals()
    written = write_parquet_atomically(_imputed_chunks(config, detector, totals), tmp_path / "out.parquet", {})

    pre = detector.preprocessor
    raw = {c: rows.column(c).to_numpy(zero_copy_only=False) for c in (*pre.columns, "region")}
    once = impute_table(detector.model, pre, raw, detector.condition.transform(raw), iterations=6, chains=3,
                        method="metropolis", seed=5, batch_size=12)  # fmt: skip
    assert pq.read_table(written).equals(_output_table(rows, once, return_samples=False))
    assert totals.rows == 700 and totals.acceptance == once.acceptance and once.acceptance.proposals > 0
    assert dict(totals.filled) == {c: int(m.sum()) for c, m in once.missing.items()}
    masked = {c: once.missing[c] for c in pre.numeric}
    truth = {c: complete.column(c).to_numpy() for c in pre.numeric}
    assert totals.compared == sum(int(m.sum()) for m in masked.values())
    expected = {"model": numeric_rmse(pre, truth, once.fill(raw), masked),
                "mean": numeric_rmse(pre, truth, mean_imputation(pre, raw), masked)}  # fmt: skip
    assert totals.rmse() == pytest.approx(expected)


def test_a_failure_in_a_later_chunk_leaves_no_file(detector, tmp_path):
    rows = pa.table({"row_id": np.arange(300), **mixed_table(n=300, seed=2)})
    pq.write_table(rows, tmp_path / "in.parquet")
    pq.write_table(rows.slice(0, 299), tmp_path / "truth.parquet")  # one row short: found in the last chunk
    config = ImputeConfig(input=str(tmp_path / "in.parquet"), truth=str(tmp_path / "truth.parquet"), iterations=2,
                          samples=2, batch_size=4)  # fmt: skip
    with pytest.raises(DataError, match="truth.parquet: the truth must hold the input's rows in the same order"):
        write_parquet_atomically(_imputed_chunks(config, detector, _Totals()), tmp_path / "out.parquet", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "truth.parquet"]


def test_the_input_is_read_with_its_files_types_merged(tmp_path):
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": pa.array([0.5, None], pa.float64())}), tmp_path / "b.parquet")
    dataset = open_rows(str(tmp_path), ["x"])  # was: "Float value 0.5 was truncated converting to int64"
    chunks = list(row_chunks(str(tmp_path), dataset, rows=3))
    assert [c.column("x").to_pylist() for c in chunks] == [[1.0, 2.0, 0.5], [None]]
