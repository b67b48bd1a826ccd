"""Storage locations and the scores table on a local warehouse with its SQLite catalog (the object-store and
PostgreSQL paths run against real servers in tests/integration/test_storage.py)."""

from __future__ import annotations

import datetime
import os
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import EqualTo

from pipelines.storage import filesystems
from pipelines.storage.fault_points import FAULT_ENV, FaultPlan
from pipelines.storage.scores_table import CATALOG_ENV, CatalogError, ScoresTable


def _day(run_date: str, ids: range) -> pa.Table:
    return pa.table({"row_id": list(ids), "anomaly_score": [float(i) for i in ids],
                     "status": ["scored"] * len(ids), "run_date": [run_date] * len(ids)})  # fmt: skip


def _replace(table: ScoresTable, rows: pa.Table, run_date: str) -> int:
    """One run date replaced in one commit, as the scoring job's sink commits it."""
    iceberg = table.load() or table.create(rows.schema)
    iceberg.overwrite(rows, overwrite_filter=EqualTo("run_date", run_date),
                      snapshot_properties={"vae.run_date": run_date})  # fmt: skip
    return iceberg.current_snapshot().snapshot_id


def test_a_local_warehouse_gets_a_sqlite_catalog_and_an_object_store_needs_a_database(tmp_path, monkeypatch):
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    local = ScoresTable.at(str(tmp_path / "wh"), "vae.scores")
    assert local.catalog_uri == f"sqlite:///{tmp_path}/wh/catalog.db" and local.namespace == "vae"
    with pytest.raises(CatalogError, match=r"^s3://b/wh: an object-store warehouse needs a catalog database; set "):
        ScoresTable.at("s3://b/wh", "vae.scores")
    monkeypatch.setenv(CATALOG_ENV, "postgresql+psycopg://scorer:secret@db:5432/iceberg")
    remote = ScoresTable.at("s3://b/wh", "vae.scores")
    assert remote.catalog_uri.endswith("@db:5432/iceberg") and remote.catalog_properties()["warehouse"] == "s3://b/wh"
    assert ScoresTable.at("s3://b/wh", "vae.scores", "sqlite:////tmp/c.db").catalog_uri == "sqlite:////tmp/c.db"
    with pytest.raises(CatalogError, match="name it namespace.table"):
        ScoresTable.at(str(tmp_path), "scores")


def test_loading_from_a_warehouse_that_does_not_exist_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    assert ScoresTable.at(str(tmp_path / "typo"), "vae.scores").load() is None
    assert not (tmp_path / "typo").exists()  # was made, with an empty catalog.db in it
    assert ScoresTable.at(str(tmp_path / "wh"), "vae.scores").create(pa.schema([("run_date", pa.date32())]))
    assert ScoresTable.at(str(tmp_path / "wh"), "vae.scores").load() is not None


def test_key_columns_the_table_cannot_take_are_named_before_any_write(tmp_path, monkeypatch):
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    table = ScoresTable.at(str(tmp_path / "wh"), "vae.scores")
    nanoseconds = pa.schema([("event_time", pa.timestamp("ns"))])
    assert table.key_problems(pa.schema([("row_id", pa.string())])) == []  # no table yet: any Iceberg type
    assert "'event_time' holds nanosecond timestamps" in table.key_problems(nanoseconds)[0]
    monkeypatch.setenv("PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE", "true")  # pyiceberg then downcasts them
    assert table.key_problems(nanoseconds) == []
    table.create(pa.schema([("row_id", pa.int64()), ("run_date", pa.string())]))
    assert table.key_problems(pa.schema([("row_id", pa.int32())])) == []  # a widening: the column keeps its type
    assert table.key_problems(pa.schema([("row_id", pa.string())])) == [
        "key column 'row_id' is string here but int64 in the table vae.scores, whose rows keep that type: write it "
        "as int64"
    ]


def test_an_unreachable_catalog_is_one_line_without_the_password(tmp_path):
    table = ScoresTable.at(str(tmp_path), "vae.scores", "postgresql+psycopg://scorer:secret@127.0.0.1:1/iceberg")
    with pytest.raises(CatalogError) as caught:
        table.catalog()
    message = str(caught.value)
    assert message.startswith("catalog postgresql+psycopg://scorer:***@127.0.0.1:1/iceberg: ")
    assert "secret" not in message and "\n" not in message


def test_each_run_replaces_its_date_only_and_older_snapshots_stay_readable_until_expired(tmp_path):
    table = ScoresTable.at(str(tmp_path), "vae.scores")
    first = _replace(table, _day("2026-11-24", range(5)), "2026-11-24")
    _replace(table, _day("2026-11-23", range(100, 103)), "2026-11-23")
    latest = _replace(table, _day("2026-11-24", range(10, 12)), "2026-11-24")
    assert table.read("2026-11-24")["row_id"].to_pylist() == [10, 11]
    assert table.read("2026-11-23")["row_id"].to_pylist() == [100, 101, 102]  # untouched
    assert sorted(table.read("2026-11-24", first)["row_id"].to_pylist()) == list(range(5))  # time travel
    assert table.date_snapshot(table.load(), "2026-11-24").snapshot_id == latest
    assert [f.name for f in table.load().spec().fields] == ["run_date"]

    data = tmp_path / "vae" / "scores" / "data"
    orphan = data / "run_date=2026-11-24" / "killed-run.parquet"  # a killed run's file, never committed
    pq.write_table(_day("2026-11-24", range(3)), orphan)
    two_days_ago = time.time() - 2 * 86400
    os.utime(orphan, (two_days_ago, two_days_ago))
    running = data / "run_date=2026-11-25" / "running-job.parquet"  # written now by a run that has not committed
    running.parent.mkdir()
    pq.write_table(_day("2026-11-25", range(3)), running)
    expired, deleted = table.expire(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
    snapshots = table.load().snapshots()
    assert expired >= 2 and [s.snapshot_id for s in snapshots] == [latest]
    assert deleted == 2 and not orphan.exists()  # the orphan and the first run's file, replaced, now unreferenced
    assert running.exists()  # unreferenced but younger than ORPHAN_GRACE: whatever the cutoff, kept
    assert table.read("2026-11-24")["row_id"].to_pylist() == [10, 11]
    assert table.read("2026-11-23")["row_id"].to_pylist() == [100, 101, 102]
    with pytest.raises(CatalogError, match=f"no snapshot {first}"):
        table.read("2026-11-24", first)


def test_the_fault_plan_is_read_from_the_environment_and_rejects_unknown_points(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "write:3")
    plan = FaultPlan.from_env()
    assert (plan.point, plan.nth, plan.pid) == ("write", 3, os.getpid())
    plan.reached("write", 2)  # not the third arrival: nothing happens
    plan.reached("commit")
    monkeypatch.setenv(FAULT_ENV, "publish")
    with pytest.raises(ValueError, match="expected one of write, commit, committed"):
        FaultPlan.from_env()
    monkeypatch.delenv(FAULT_ENV)
    assert FaultPlan.from_env().point is None


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: The specified bucket does not exist",
         "the bucket does not exist"),
        ("AWS Error SIGNATURE_DOES_NOT_MATCH during ListObjectsV2 operation: The request signature we calculated",
         "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("AWS Error ACCESS_DENIED during HeadObject operation: No response body.",
         "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to server",
         "the endpoint is unreachable: check AWS_ENDPOINT_URL and the network"),
        ("When reading 'x': disk quota exceeded\nsecond line", "When reading 'x': disk quota exceeded"),
    ],
)  # fmt: skip
def test_storage_errors_become_one_line_naming_the_uri(message, cause):
    error = filesystems.explain(OSError(message), "s3://bucket/prefix")
    assert str(error) == f"s3://bucket/prefix: {cause}"


def test_an_unwritable_location_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(filesystems.StorageError, match=f"^{blocker}/scores: "):
        filesystems.check_writable(f"{blocker}/scores")
    filesystems.check_writable(str(tmp_path / "fine"))
    assert filesystems.list_files(str(tmp_path / "fine")) == []  # the probe is deleted


def test_local_paths_and_uris_resolve_to_their_filesystems(tmp_path):
    fs, path = filesystems.filesystem(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    assert filesystems.is_remote("s3://bucket/key") and not filesystems.is_remote(str(tmp_path))
    assert not filesystems.is_remote(f"file://{tmp_path}")


def test_a_run_dates_summary_reads_it_batch_by_batch_and_keeps_the_best_rows_across_batches(tmp_path):
    from pipelines.commands.scores import read

    table = ScoresTable.at(str(tmp_path), "vae.scores")

    def rows(ids: range, offset: float, quarantined: tuple[int, ...] = ()) -> pa.Table:
        scores = [None if i in quarantined else offset + i for i in ids]
        return pa.table({"row_id": list(ids), "anomaly_score": pa.array(scores, pa.float64()),
                         "is_anomaly": [s is not None and s > 8 for s in scores],
                         "status": ["quarantined" if i in quarantined else "scored" for i in ids],
                         "run_date": ["2026-11-24"] * len(ids)})  # fmt: skip

    iceberg = table.create(rows(range(1), 0).schema)
    iceberg.append(rows(range(10), 0.0, quarantined=(3, 4)))  # two data files: two batches at least
    iceberg.append(rows(range(10, 15), 100.0))
    assert len(list(table.batches("2026-11-24")[1])) >= 2
    published = read(table, "2026-11-24", top=3)
    assert (published.rows, published.scored, published.quarantined, published.anomalies) == (15, 13, 2, 6)
    assert published.top["row_id"].to_pylist() == [14, 13, 12]  # the best of the second batch
    assert read(table, "2026-11-24", top=20).top["row_id"].to_pylist() == [14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 2, 1, 0]
    with pytest.raises(CatalogError, match="no rows for run_date 2026-11-25"):
        read(table, "2026-11-25")


def test_the_scores_command_refuses_a_negative_age_or_count(tmp_path):
    from pipelines.commands.scores import main
    from pipelines.settings.yaml_configs import ConfigError

    for days in ("-1", "inf"):  # inf: the cutoff date overflowed in a traceback
        with pytest.raises(ConfigError, match=r"--expire-older-than: expected a number of days from 0 to 36500, got"):
            main(["--expire-older-than", days, f"output={tmp_path}"])
    with pytest.raises(ConfigError, match=r"--top: expected a count of rows >= 0, got -1"):
        main(["--run-date", "2026-11-24", "--top", "-1", f"output={tmp_path}"])


def test_a_location_contains_itself_and_what_lies_under_it_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert filesystems.contains(str(tmp_path / "in"), "in/scores")  # relative to the working directory
    assert filesystems.contains(f"file://{tmp_path}/in", str(tmp_path / "in"))
    assert not filesystems.contains(str(tmp_path / "in"), str(tmp_path / "input-2"))  # a prefix is not a parent
    assert not filesystems.contains(str(tmp_path / "in" / "day.parquet"), str(tmp_path / "in"))
    assert filesystems.contains("s3://bucket/exports/", "s3://bucket/exports/scores")
    assert not filesystems.contains("s3://bucket/exports", "s3://bucket/exports-scores")
    assert not filesystems.contains("s3://bucket/exports", str(tmp_path))
