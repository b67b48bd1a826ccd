"""The scoring job's write tasks: scored and quarantined rows apart, and tallies that add up to the whole."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.commands.score import check_every_row_written
from pipelines.runtime.parquet_checks import DataError
from pipelines.runtime.scored_output import REASON, ScoredOutputSink, Tally
from pipelines.tracking.monitoring import decile_counts

QUANTILES = list(np.linspace(0.0, 10.0, 101))  # deciles at 0, 1, ..., 10


def _actor_table(scores: list[float], bad_ids: list[int]) -> pa.Table:
    """What a scoring actor returns: scored rows (score columns) and quarantined rows (inputs + reason)."""
    scored = pd.DataFrame({"row_id": range(len(scores)), "anomaly_score": scores,
                           "is_anomaly": [s > 8 for s in scores]})  # fmt: skip
    bad = len(bad_ids)
    quarantined = pd.DataFrame({"row_id": np.array(bad_ids, dtype=np.int64), "x": [np.nan] * bad,
                                REASON: ["x is missing"] * bad})  # fmt: skip
    parts = [pa.Table.from_pandas(f, preserve_index=False) for f in (scored, quarantined)]
    return pa.concat_tables(parts, promote_options="default")


def _sink(tmp_path, fraction=1.0) -> ScoredOutputSink:
    return ScoredOutputSink(str(tmp_path / "out"), str(tmp_path / "out" / "_quarantine"),
                            ["row_id", "anomaly_score", "is_anomaly"], ["row_id", "x", REASON], QUANTILES, fraction,
                            rows_per_file=100)  # fmt: skip


def test_a_write_task_stores_each_kind_of_row_apart_and_tallies_them(tmp_path):
    sink = _sink(tmp_path)
    tally = sink.write(
        [_actor_table([0.5, 9.5, 3.2], [100]), _actor_table([8.5], [101, 102])], SimpleNamespace(task_idx=7)
    )
    (scored_file,) = (tmp_path / "out").glob("*.parquet")
    (quarantine_file,) = (tmp_path / "out" / "_quarantine").glob("*.parquet")
    scored, quarantined = pd.read_parquet(scored_file), pd.read_parquet(quarantine_file)
    assert list(scored.columns) == ["row_id", "anomaly_score", "is_anomaly"]
    assert scored.anomaly_score.tolist() == [0.5, 9.5, 3.2, 8.5] and scored.row_id.dtype == np.int64
    assert list(quarantined.columns) == ["row_id", "x", REASON] and quarantined.row_id.tolist() == [100, 101, 102]
    assert (tally.scored, tally.quarantined, tally.anomalies, tally.rows) == (4, 3, 2, 7)
    np.testing.assert_array_equal(tally.deciles, decile_counts(np.array([0.5, 9.5, 3.2, 8.5]), QUANTILES))
    np.testing.assert_array_equal(np.sort(tally.sample), [0.5, 3.2, 8.5, 9.5])  # fraction 1: every score


def test_a_task_with_only_quarantined_rows_writes_no_scored_file(tmp_path):
    tally = _sink(tmp_path).write([_actor_table([], [5, 6])], SimpleNamespace(task_idx=0))
    assert not list((tmp_path / "out").glob("*.parquet"))
    assert (tally.scored, tally.quarantined, tally.anomalies) == (0, 2, 0) and tally.deciles.sum() == 0


def test_the_sample_keeps_about_the_given_fraction_and_tallies_merge_to_the_whole(tmp_path):
    rng = np.random.default_rng(0)
    sink = _sink(tmp_path, fraction=0.1)
    parts = [rng.uniform(0, 10, size=5000).tolist() for _ in range(4)]
    tallies = [sink.write([_actor_table(p, [])], SimpleNamespace(task_idx=i)) for i, p in enumerate(parts)]
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
