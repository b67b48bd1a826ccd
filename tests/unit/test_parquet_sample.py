"""A bounded, seeded random sample of a Parquet input."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.runtime.parquet_sample import sample_parquet


def _write(tmp_path, rows: int) -> str:
    for i, part in enumerate(np.array_split(np.arange(rows), 3)):
        pd.DataFrame({"row_id": part, "x": part * 0.5, "other": "a"}).to_parquet(tmp_path / f"part-{i}.parquet")
    return str(tmp_path)


def test_a_large_input_gives_a_bounded_seeded_sample_from_every_file(tmp_path):
    path = _write(tmp_path, 30_000)
    sample = sample_parquet(path, ["row_id", "x"], rows=1_000, seed=3).to_pandas()
    ids = sample["row_id"].to_numpy()
    assert 900 <= len(ids) <= 1_000 and len(np.unique(ids)) == len(ids)
    assert list(sample.columns) == ["row_id", "x"] and np.allclose(sample["x"], ids * 0.5)
    assert (np.bincount(ids // 10_000, minlength=3) > 250).all()  # each of the three files
    again = sample_parquet(path, ["row_id", "x"], rows=1_000, seed=3).to_pandas()
    assert again["row_id"].tolist() == ids.tolist()
    assert sample_parquet(path, ["row_id"], rows=1_000, seed=4).to_pandas()["row_id"].tolist() != ids.tolist()


def test_a_small_input_is_read_whole(tmp_path):
    path = _write(tmp_path, 500)
    assert sorted(sample_parquet(path, ["row_id"], rows=1_000, seed=0).to_pandas()["row_id"]) == list(range(500))
