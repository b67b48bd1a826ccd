"""The training statistics on a real local Ray (`fit_preprocessor`): what `Preprocessor.fit` computes in one
process, with a fill value among ordinary numbers left out of them by the robust screen, over many blocks (one of
them empty)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray.data

from pipelines.runtime.cluster import ray_data_context
from pipelines.runtime.parquet_input import SCREEN_SAMPLE, fit_preprocessor
from vae import Preprocessor

pytestmark = pytest.mark.usefixtures("local_ray")


def test_a_fill_value_is_screened_out_of_the_statistics_as_the_library_screens_it():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"a": rng.normal(size=30 * SCREEN_SAMPLE), "b": rng.lognormal(size=30 * SCREEN_SAMPLE)})
    rows.loc[[5, 20_000], "a"] = 9.96921e36  # netCDF's float fill value, twice, in two blocks
    rows.loc[7, "b"] = 1e20
    blocks = [rows.iloc[start : start + len(rows) // 8] for start in range(0, len(rows), len(rows) // 8)]
    blocks.insert(3, rows.iloc[:0])  # an empty block, as a split that keeps no row of a file leaves
    with ray_data_context():  # as the pipeline aggregates: the sort-based shuffle
        pipeline = fit_preprocessor(ray.data.from_pandas(blocks), ("a", "b"), (), (), "impute")
    library = Preprocessor(numeric=["a", "b"]).fit(rows)
    clean = [rows.a.drop(index=[5, 20_000]), rows.b.drop(index=7)]  # each column without its own fill values
    np.testing.assert_allclose(pipeline.mean, [c.mean() for c in clean], rtol=1e-9)
    np.testing.assert_allclose(pipeline.std, [c.std(ddof=0) for c in clean], rtol=1e-9)
    np.testing.assert_allclose(library.mean, pipeline.mean, rtol=1e-9)
    np.testing.assert_allclose(library.std, pipeline.std, rtol=1e-9)
    assert np.flatnonzero(pipeline.unusable_rows(rows)).tolist() == [5, 7, 20_000]
    for column in ("a", "b"):  # the sample's quartiles place the bounds as all the values do
        np.testing.assert_allclose(pipeline.bounds[column], library.bounds[column], rtol=0.15)
