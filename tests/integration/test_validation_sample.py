"""Validation scoring on Ray Data actors: a bounded, random sample reaches the driver, scored as the library
scores it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray.data

from pipelines.runtime.validation_pass import score_sample
from vae import VAE, DataLayout, Detector, ModelConfig, Preprocessor, ScoreConfig, score_rows

pytestmark = pytest.mark.usefixtures("local_ray")
FEATURES = 3


def _detector() -> Detector:
    pre = Preprocessor(numeric=tuple(f"f{i}" for i in range(FEATURES)))
    pre.fit(pd.DataFrame(np.random.default_rng(0).normal(size=(50, FEATURES)), columns=list(pre.numeric)))
    model = VAE(ModelConfig(latent_dim=2, hidden_dims=(8,)), DataLayout(pre.layout_blocks()))
    return Detector(model, pre, score_config=ScoreConfig(samples=4))


def _features(ids: np.ndarray) -> np.ndarray:
    return np.sin(np.outer(ids, np.arange(1, FEATURES + 1)) * 0.01).astype(np.float32)


def _encoded(rows: int) -> tuple[np.ndarray, ray.data.Dataset]:
    """`rows` encoded rows in 8 blocks, each labelled with its row number, and their features."""
    ds = ray.data.range(rows, override_num_blocks=8)
    return _features(np.arange(rows)), ds.map_batches(lambda b: {"x": _features(b["id"]), "label": b["id"]})


def test_a_large_split_sends_a_bounded_random_sample_scored_like_the_library():
    detector = _detector()
    x, ds = _encoded(20_000)
    sample = score_sample(detector, ds, rows=20_000, sample_rows=2_000)
    ids = sample.labels
    assert 1_800 <= len(sample) <= 2_000 and len(np.unique(ids)) == len(ids)
    assert ids.max() > 15_000 and ids.min() < 5_000  # from the whole split, not its first rows
    expected = score_rows(detector.model, x[ids], None, detector.score_config)
    np.testing.assert_allclose(sample.scores, expected.score, rtol=1e-5)
    np.testing.assert_allclose(sample.contributions, expected.contributions, rtol=1e-5, atol=1e-6)
    assert sample.latent_means.shape == (len(sample), 2)


def test_a_small_split_is_scored_whole():
    x, ds = _encoded(500)
    sample = score_sample(_detector(), ds, rows=500, sample_rows=2_000)
    assert sorted(sample.labels) == list(range(500))


def test_drop_seen_leaves_out_the_rows_that_repeat_a_training_row():
    from pipelines.runtime.validation_pass import drop_seen

    _, train = _encoded(1_000)  # rows 0..999, in 8 blocks
    ids = np.arange(990, 1_010)  # 990..999 repeat training rows, 1000..1009 do not
    observed = np.ones((len(ids), FEATURES), dtype=bool)
    observed[0, 1] = False  # row 990 with a feature missing: another row than the training one
    rows = {"x": _features(ids), "observed": observed, "label": ids}
    train = train.map_batches(lambda b: {**b, "observed": np.ones(b["x"].shape, dtype=bool)})
    kept = drop_seen(rows, train)
    assert list(kept["label"]) == [990, *range(1_000, 1_010)]
    np.testing.assert_array_equal(kept["x"], rows["x"][np.isin(ids, kept["label"])])
