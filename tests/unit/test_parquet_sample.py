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


def test_the_evaluation_reads_a_bounded_sample_of_a_large_labelled_input_with_its_labels(tmp_path):
    from pipelines.commands.evaluate import read_labelled

    ids = np.arange(20_000)
    pd.DataFrame({"row_id": ids, "x": ids * 0.5, "label": (ids % 10 == 0).astype(int)}).to_parquet(tmp_path / "l.pq")
    rows, labels = read_labelled(str(tmp_path / "l.pq"), "label", rows=2_000, seed=0)
    assert 1_800 <= len(rows) <= 2_000 and list(rows.columns) == ["row_id", "x", "label"]
    np.testing.assert_array_equal(labels, (rows["row_id"].to_numpy() % 10 == 0).astype(int))
    assert 0.05 < labels.mean() < 0.15
    whole, _ = read_labelled(str(tmp_path / "l.pq"), "label", rows=50_000, seed=0)
    assert whole["row_id"].tolist() == ids.tolist()


def test_files_whose_column_is_int64_in_one_and_double_in_another_are_read_as_doubles(tmp_path):
    pd.DataFrame({"x": [1, 2, 3]}).to_parquet(tmp_path / "part-0.parquet", index=False)  # int64
    pd.DataFrame({"x": [-1.25, np.nan]}).to_parquet(tmp_path / "part-1.parquet", index=False)  # double
    values = sample_parquet(str(tmp_path), ["x"], rows=10, seed=0).column("x").to_pylist()
    assert sorted(values, key=lambda v: (v is None or v != v, v))[:4] == [-1.25, 1.0, 2.0, 3.0] and len(values) == 5
