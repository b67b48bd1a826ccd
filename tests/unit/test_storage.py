"""Storage locations and run-date partitions on the local filesystem (the object-store path runs against a real
S3-compatible server in tests/integration/test_storage.py)."""

from __future__ import annotations

import pandas as pd
import pyarrow.fs as pafs
import pytest

from pipelines.storage import filesystems
from pipelines.storage.partitions import QUARANTINE, SUCCESS, complete_files, publish, read_manifest, stage


def _write_attempt(staging, rows: range, quarantined: range) -> None:
    pd.DataFrame({"row_id": list(rows)}).to_parquet(f"{staging.location}/part-0.parquet")
    (pafs.LocalFileSystem()).create_dir(staging.quarantine)
    pd.DataFrame({"row_id": list(quarantined)}).to_parquet(f"{staging.quarantine}/part-0.parquet")


def test_a_published_partition_names_its_files_and_a_rerun_replaces_it_whole(tmp_path):
    root = str(tmp_path / "scores")
    first = stage(root, "2026-11-24")
    _write_attempt(first, range(10), range(100, 102))
    partition = publish(first, {"rows": 12})
    manifest = read_manifest(partition)
    assert manifest["files"] == ["part-0.parquet"] and manifest["quarantine_files"] == [f"{QUARANTINE}/part-0.parquet"]
    assert manifest["summary"] == {"rows": 12} and manifest["attempt"] == first.attempt
    assert pd.read_parquet(partition).row_id.tolist() == list(range(10))  # plain readers see the data too

    second = stage(root, "2026-11-24")
    _write_attempt(second, range(20, 25), range(0))
    publish(second, {"rows": 5})
    data = complete_files(partition)
    assert [pd.read_parquet(f).row_id.tolist() for f in data] == [list(range(20, 25))]
    assert filesystems.list_files(partition) == sorted([SUCCESS, "part-0.parquet", f"{QUARANTINE}/part-0.parquet"])


def test_an_attempt_that_never_published_is_not_a_partition_and_is_cleared_by_the_next(tmp_path):
    root = str(tmp_path / "scores")
    crashed = stage(root, "2026-11-25")
    _write_attempt(crashed, range(3), range(0))
    assert complete_files(f"{root}/run_date=2026-11-25") is None
    retry = stage(root, "2026-11-25")
    assert filesystems.list_files(f"{root}/.staging") == []  # the crashed attempt's files are gone
    _write_attempt(retry, range(3), range(0))
    assert complete_files(publish(retry, {})) is not None


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
    assert filesystems.read_text(str(tmp_path / "missing.json")) is None
