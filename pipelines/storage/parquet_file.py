"""One Parquet file published atomically: written beside its final path under a temporary name, then renamed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomically(tables: Iterable[pa.Table], path: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write `tables` in order as one file (each cast to the first one's schema, which carries `metadata`) to a
    temporary file beside `path`, then rename it into place: a reader sees the old file or the whole new one, and
    a failed write (an exception from `tables` included) leaves nothing. Only one table is held at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    writer = None
    try:
        for table in tables:
            if writer is None:
                merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}}
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata(merged))
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            raise ValueError(f"nothing to write to {path}")
        writer.close()
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return path
