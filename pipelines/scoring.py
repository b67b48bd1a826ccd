"""Scoring Ray datasets with a Detector: one model per actor, batches of raw rows in, scores out."""

from __future__ import annotations

import pandas as pd
import ray.data

from vae import Detector

SCORE_BATCH = 4096


class ScoreRows:
    """Ray Data callable class: adds `anomaly_score` to a pandas batch of raw rows."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scores, _ = self.detector.score(batch, batch_size=SCORE_BATCH)
        return batch.assign(anomaly_score=scores)


def score_dataset(ds: ray.data.Dataset, detector: Detector, concurrency: int = 1) -> pd.DataFrame:
    """The `anomaly_score` column of every row of `ds`, collected on the driver (scores only): (N, 1)."""
    scored = ds.map_batches(
        ScoreRows, fn_constructor_kwargs={"detector": detector}, batch_format="pandas", batch_size=SCORE_BATCH,
        compute=ray.data.ActorPoolStrategy(size=concurrency),
    )  # fmt: skip
    return scored.select_columns(["anomaly_score"]).to_pandas()
