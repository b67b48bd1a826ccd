"""One Parquet file published atomically: written beside its final path under a temporary name, then renamed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomically(table: pa.Table, path: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write `table` (with `metadata` in its schema) to a temporary file beside `path`, then rename it into
    place: a reader sees the old file or the whole new one, and a failed write leaves nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
    try:
        pq.write_table(table.replace_schema_metadata(merged), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
