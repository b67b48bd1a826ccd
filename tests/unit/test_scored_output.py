"""The scoring job's write tasks: table files and tallies that add up to the whole; nothing public before the commit."""

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from ray.data.datasource.datasink import WriteResult

from pipelines.commands.score import check_every_row_written
from pipelines.runtime.parquet_checks import DataError
from pipelines.runtime.scored_output import REASON, STATUS, ScoresSink, Tally
from pipelines.storage.fault_points import FaultPlan
from pipelines.storage.scores_table import ScoresTable
from pipelines.tracking.monitoring import decile_counts

QUANTILES = list(np.linspace(0.0, 10.0, 101))  # deciles at 0, 1, ..., 10


def _actor_table(scores: list[float], bad_ids: list[int]) -> pa.Table:
    """What a scoring actor returns: scored rows and quarantined rows (null score, a reason) in one schema."""
    n, bad = len(scores), len(bad_ids)
    return pa.table({
        "row_id": pa.array([*range(n), *bad_ids], pa.int64()),
        "anomaly_score": pa.array([*scores, *[None] * bad], pa.float64()),
        "is_anomaly": pa.array([*(s > 8 for s in scores), *[None] * bad], pa.bool_()),
        STATUS: ["scored"] * n + ["quarantined"] * bad,
        REASON: pa.array([None] * n + ["x is missing"] * bad, pa.string()),
        "run_date": ["2026-11-24"] * (n + bad),
    })  # fmt: skip


def _sink(tmp_path, fraction=1.0) -> ScoresSink:
    table = ScoresTable.at(str(tmp_path / "warehouse"), "vae.scores")
    sink = ScoresSink(table, "2026-11-24", QUANTILES, fraction, rows_per_file=100, faults=FaultPlan())
    sink.on_write_start(_actor_table([1.0], [2]).schema)
    return sink


def test_a_write_task_writes_table_files_and_tallies_them_and_only_the_commit_publishes(tmp_path):
    sink = _sink(tmp_path)
    written = sink.write(
        [_actor_table([0.5, 9.5, 3.2], [100]), _actor_table([8.5], [101, 102])], SimpleNamespace(task_idx=7)
    )
    tally = written.tally
    assert (tally.scored, tally.quarantined, tally.anomalies, tally.rows) == (4, 3, 2, 7)
    np.testing.assert_array_equal(tally.deciles, decile_counts(np.array([0.5, 9.5, 3.2, 8.5]), QUANTILES))
    np.testing.assert_array_equal(np.sort(tally.sample), [0.5, 3.2, 8.5, 9.5])  # fraction 1: every score
    assert sum(f.record_count for f in written.files.data_files) == 7
    assert len(sink.table.read("2026-11-24")) == 0  # files written, nothing committed

    sink.on_write_complete(WriteResult(num_rows=7, size_bytes=0, write_returns=[written]))
    assert sink.tally.rows == 7
    snapshot = sink.commit({"vae.model": "m/1"})
    rows = sink.table.read("2026-11-24").to_pandas().sort_values("row_id")
    assert rows.row_id.tolist() == [0, 0, 1, 2, 100, 101, 102]
    assert rows[rows.status == "quarantined"].quarantine_reason.eq("x is missing").all()
    properties = sink.table.load().snapshot_by_id(snapshot).summary.additional_properties
    assert properties["vae.model"] == "m/1" and properties["vae.run_date"] == "2026-11-24"


def test_a_task_with_only_quarantined_rows_tallies_no_score(tmp_path):
    tally = _sink(tmp_path).write([_actor_table([], [5, 6])], SimpleNamespace(task_idx=0)).tally
    assert (tally.scored, tally.quarantined, tally.anomalies) == (0, 2, 0) and tally.deciles.sum() == 0


def test_the_sample_keeps_about_the_given_fraction_and_tallies_merge_to_the_whole(tmp_path):
    rng = np.random.default_rng(0)
    sink = _sink(tmp_path, fraction=0.1)
    sink.seed = 7  # a job draws its own (uuid): fixed here so the sample's quantile check is not a 3-sigma coin
    parts = [rng.uniform(0, 10, size=5000).tolist() for _ in range(4)]
    tallies = [sink.write([_actor_table(p, [])], SimpleNamespace(task_idx=i)).tally for i, p in enumerate(parts)]
    whole = Tally.merge(tallies)
    assert whole.scored == 20_000 and whole.anomalies == sum(np.sum(np.array(p) > 8) for p in parts)
    np.testing.assert_array_equal(whole.deciles, decile_counts(np.concatenate(parts), QUANTILES))
    assert 1700 < len(whole.sample) < 2300 and set(whole.sample) <= set(np.concatenate(parts))
    assert np.quantile(whole.sample, 0.9) == pytest.approx(9.0, abs=0.2)  # uniform on [0, 10]


def test_a_row_count_that_differs_from_the_footers_fails_before_publishing():
    check_every_row_written("in/", 7, Tally(scored=4, quarantined=3))
    with pytest.raises(
        DataError, match=r"in/: its Parquet footers count 8 rows but the job wrote 7 .*nothing was published"
    ):
        check_every_row_written("in/", 8, Tally(scored=4, quarantined=3))


def test_a_dictionary_key_is_stored_as_its_values_type(tmp_path):
    from pipelines.runtime.batch_inference import _conform, output_schema

    cust = pa.array(["a", "b", "a"]).dictionary_encode()  # a pandas category written to Parquet
    schema = output_schema(pa.schema([("cust", cust.type), ("row_id", pa.int64())]), top_features=1)
    assert schema.field("cust").type == pa.string() and schema.field("row_id").type == pa.int64()
    rows = _conform(pa.table({"cust": cust, "row_id": [1, 2, 3], "run_date": ["2026-11-24"] * 3}), schema)
    assert rows.column("cust").to_pylist() == ["a", "b", "a"]
    table = ScoresTable.at(str(tmp_path), "vae.scores")
    table.create(schema).append(rows)  # Iceberg takes it (was: "Unable to merge ... large_string vs dictionary")
    assert table.read("2026-11-24")["cust"].to_pylist() == ["a", "b", "a"]
    assert table.key_problems(pa.schema([pa.field("cust", cust.type)])) != []  # a dictionary against the table
    assert table.key_problems(pa.schema([schema.field("cust")])) == []  # what `score` checks (stored_keys)
