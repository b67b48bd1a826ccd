"""Run-date partitions published atomically on a local or shared filesystem.

Everything is written under `<root>/.staging/` (hidden from readers: pyarrow and Spark skip names starting
with "." or "_"), then the finished directory is renamed to `<root>/run_date=YYYY-MM-DD/`. A crash before the
rename leaves only staging files, which the next run removes; a re-run replaces the partition whole, so a
reader sees the old partition, no partition, or the new one: never a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

STAGING = ".staging"
SUCCESS = "_SUCCESS"


def partition_dir(root: str | Path, run_date: str) -> Path:
    return Path(root) / f"run_date={run_date}"


def new_staging_dir(root: str | Path, run_date: str) -> Path:
    """A fresh staging directory for one attempt; leftovers of earlier attempts for this date are removed."""
    staging = Path(root) / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for old in staging.glob(f"run_date={run_date}-*"):
        shutil.rmtree(old, ignore_errors=True)
    path = staging / f"run_date={run_date}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def publish(staged: Path, root: str | Path, run_date: str, summary: dict[str, Any]) -> Path:
    """Mark `staged` complete (`_SUCCESS` with the summary) and swap it in as the run date's partition."""
    (staged / SUCCESS).write_text(json.dumps(summary, indent=2, default=str))
    target = partition_dir(root, run_date)
    replaced = None
    if target.exists():
        replaced = staged.parent / f"{staged.name}-replaced"
        os.rename(target, replaced)
    os.rename(staged, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    return target


def is_complete(partition: Path) -> bool:
    return (partition / SUCCESS).is_file()
