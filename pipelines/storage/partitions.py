"""Run-date partitions, published atomically and idempotently on a filesystem or an object store.

Every complete partition `<root>/run_date=YYYY-MM-DD/` holds a manifest, `_SUCCESS`: JSON naming the data files
(`files`), the quarantined rows' files (`quarantine_files`), relative to the partition, and the run's summary.
A reader takes a partition as complete only when `_SUCCESS` exists, and reads exactly the files it names
(`complete_files` does both).

- Local or shared filesystem: a run writes under `<root>/.staging/` (hidden: readers skip names starting with "."
  or "_"), then renames the finished directory into place. A reader that just reads the directory sees the old
  partition, none, or the new one, never a mix.
- Object store (s3://, gs://; no atomic rename): a run writes its files under `run_date=.../_attempt=<id>/`, then
  commits by writing `_SUCCESS` (one object, replaced whole by a single PUT), then deletes every other object of
  the partition (older attempts). A crash before the commit leaves the previous manifest and its files untouched,
  so readers see the old partition or, on a first run, none; a re-run replaces the partition exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import filesystems

STAGING = ".staging"
SUCCESS = "_SUCCESS"
QUARANTINE = "_quarantine"


@dataclass(frozen=True)
class Staging:
    """Where one attempt writes: data files at `location`, quarantined rows at `location/_quarantine`."""

    root: str
    run_date: str
    attempt: str
    location: str

    @property
    def quarantine(self) -> str:
        return filesystems.join(self.location, QUARANTINE)


def partition_location(root: str, run_date: str) -> str:
    return filesystems.join(root, f"run_date={run_date}")


def stage(root: str, run_date: str) -> Staging:
    """A fresh place for one attempt; on a filesystem, leftovers of earlier attempts for this date are removed."""
    attempt = uuid.uuid4().hex[:12]
    if filesystems.is_remote(root):
        location = filesystems.join(partition_location(root, run_date), f"_attempt={attempt}")
        return Staging(root, run_date, attempt, location)
    staging = Path(root) / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for old in staging.glob(f"run_date={run_date}-*"):
        shutil.rmtree(old, ignore_errors=True)
    path = staging / f"run_date={run_date}-{attempt}"
    path.mkdir()
    return Staging(root, run_date, attempt, str(path))


def publish(staging: Staging, summary: dict[str, Any]) -> str:
    """Write the manifest and make the attempt the run date's partition; returns the partition's location."""
    files = filesystems.list_files(staging.location)
    quarantine_files = [f for f in files if f.startswith(f"{QUARANTINE}/")]
    data_files = [f for f in files if f not in quarantine_files]
    target = partition_location(staging.root, staging.run_date)
    if filesystems.is_remote(staging.root):
        prefix = f"_attempt={staging.attempt}/"
        data_files, quarantine_files = [prefix + f for f in data_files], [prefix + f for f in quarantine_files]
    manifest = {"run_date": staging.run_date, "attempt": staging.attempt, "files": data_files,
                "quarantine_files": quarantine_files, "summary": summary}  # fmt: skip
    text = json.dumps(manifest, indent=2, default=str)
    if filesystems.is_remote(staging.root):
        filesystems.write_text(filesystems.join(target, SUCCESS), text)  # the commit
        for stale in filesystems.subdirectories(target):  # older attempts, directory markers included
            if stale != prefix.rstrip("/"):
                filesystems.delete_dir(filesystems.join(target, stale))
        stale_files = [f for f in filesystems.list_files(target) if f != SUCCESS and not f.startswith(prefix)]
        filesystems.delete(target, stale_files)
        return target
    Path(staging.location, SUCCESS).write_text(text)
    _swap_in(Path(staging.location), Path(target))
    return target


def _swap_in(staged: Path, target: Path) -> None:
    replaced = None
    if target.exists():
        replaced = staged.parent / f"{staged.name}-replaced"
        os.rename(target, replaced)
    os.rename(staged, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def read_manifest(partition: str) -> dict[str, Any] | None:
    """The partition's manifest, or None when the partition is not complete."""
    text = filesystems.read_text(filesystems.join(partition, SUCCESS))
    return None if text is None else json.loads(text)


def is_complete(partition: str | Path) -> bool:
    return read_manifest(str(partition)) is not None


def complete_files(partition: str, quarantine: bool = False) -> list[str] | None:
    """The locations of a complete partition's data (or quarantine) files; None when it is not complete."""
    manifest = read_manifest(partition)
    if manifest is None:
        return None
    return [filesystems.join(partition, f) for f in manifest["quarantine_files" if quarantine else "files"]]
