"""A bounded random sample of a Parquet input, read with pyarrow batch by batch (for fits that need only a sample,
such as evaluation's baselines)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .parquet_checks import open_merged, unreadable


def sample_parquet(path: str, columns: list[str], rows: int, seed: int) -> pa.Table:
    """A seeded uniform random sample of at most `rows` rows of `columns` of the Parquet at `path` (every row when
    it holds no more), read batch by batch: memory holds the sample and one batch, whatever the input's size.
    Raises DataError for a file whose pages cannot be read."""
    dataset = open_merged(path)
    fraction = rows / max(dataset.count_rows(), 1)  # from the footers
    rng = np.random.default_rng(seed)
    kept, parts = 0, []
    try:
        for batch in dataset.to_batches(columns=columns):
            if fraction < 1:
                batch = batch.filter(pa.array(rng.random(batch.num_rows) < fraction))
            parts.append(batch.slice(0, rows - kept))  # a Bernoulli sample can run a few rows over
            kept += parts[-1].num_rows
            if kept == rows:
                break
    except (OSError, pa.ArrowException) as err:  # corrupt pages behind a valid footer
        raise unreadable(path, err) from err
    return pa.Table.from_batches(parts, schema=pa.schema([dataset.schema.field(c) for c in columns]))
