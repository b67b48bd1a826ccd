"""Scoring encoded Ray datasets with a Detector on the driver (validation and reference scores after training)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray.data
import torch

from vae import Detector, score_rows

BATCH_ROWS = 4096


@dataclass
class EncodedScores:
    scores: np.ndarray  # (N,)
    contributions: np.ndarray  # (N, F)
    latent_means: np.ndarray  # (N, L) posterior means
    labels: np.ndarray | None  # (N,) when the dataset carries a label column


def score_encoded(detector: Detector, ds: ray.data.Dataset) -> EncodedScores:
    """Scores and posterior means of every row of an encoded dataset ({"x", ["c"], ["label"]} columns).

    The rows stream to the caller in batches: use it on validation data and samples, not on a whole table.
    """
    model = detector.model.eval()
    scores, contributions, means, labels = [], [], [], []
    for batch in ds.iter_batches(batch_size=BATCH_ROWS, batch_format="numpy"):
        x, c = batch["x"], batch.get("c")
        rows = score_rows(model, x, c, detector.score_config, batch_size=BATCH_ROWS)
        scores.append(rows.score)
        contributions.append(rows.contributions)
        with torch.no_grad():  # Ray's numpy batches are read-only: copy them into tensors
            c_t = None if c is None else torch.tensor(c, dtype=torch.float32)
            means.append(model.encode(torch.tensor(x, dtype=torch.float32), c_t).mu.numpy())
        if "label" in batch:
            labels.append(batch["label"])
    return EncodedScores(
        np.concatenate(scores),
        np.concatenate(contributions),
        np.concatenate(means),
        np.concatenate(labels) if labels else None,
    )
