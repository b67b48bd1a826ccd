"""Validation scores on the cluster: Ray Data actors score an encoded dataset and only a bounded random sample of
the scored rows reaches the driver (for the threshold, the drift reference and the plots)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray.data
import torch

from vae import Detector, row_hashes, score_rows

from .cluster import map_batches_on_actors

SAMPLE_ROWS = 50_000  # the most validation rows whose scores reach the driver
BATCH_ROWS = 4096
SAMPLE_SEED = 0


@dataclass
class EncodedScores:
    scores: np.ndarray  # (N,)
    contributions: np.ndarray  # (N, F)
    latent_means: np.ndarray  # (N, L) posterior means
    labels: np.ndarray | None  # (N,) when the dataset carries a label column
    observed: np.ndarray | None = None  # (N, F) the features each row has (tabular rows), see `EncodedScorer`

    def __len__(self) -> int:
        return self.scores.size


class EncodedScorer:
    """Ray Data callable class: a numpy batch of N encoded rows ({"x", ["observed"], ["c"], ["label"]}) ->
    {"score": (N,), "contributions": (N, F), "latent_mean": (N, L)[, "observed": (N, F)][, "label": (N,)]} under
    the detector it was given; the features "observed" marks missing are left out of the scores, as in
    `Detector.score`, and the mask is passed on (a feature's typical contribution counts the rows that have it)."""

    def __init__(self, detector: Detector) -> None:
        self.model = detector.model.eval()
        self.score_config = detector.score_config

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, c = batch["x"], batch.get("c")
        rows = score_rows(self.model, x, c, self.score_config, batch_size=len(x), observed=batch.get("observed"))
        with torch.no_grad():  # Ray's numpy batches are read-only: copy them into tensors
            c_t = None if c is None else torch.tensor(c, dtype=torch.float32)
            means = self.model.encode(torch.tensor(x, dtype=torch.float32), c_t).mu.numpy()
        out = {"score": rows.score, "contributions": rows.contributions, "latent_mean": means}
        out |= {name: batch[name] for name in ("observed", "label") if name in batch}
        return out


def score_sample(
    detector: Detector, ds: ray.data.Dataset, rows: int, sample_rows: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED
) -> EncodedScores:
    """Scores of a seeded random sample of at most `sample_rows` of the `rows` rows of an encoded dataset, scored by
    an autoscaling pool of Ray Data actors; every row when `rows <= sample_rows`. N <= sample_rows rows reach the
    driver, whatever the size of `ds`."""
    scored = map_batches_on_actors(
        _sampled(ds, rows, sample_rows, seed), EncodedScorer, fn_constructor_kwargs={"detector": detector},
        batch_size=BATCH_ROWS, batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=None),
    )  # fmt: skip
    columns = _collect(scored, sample_rows)
    return EncodedScores(columns["score"], columns["contributions"], columns["latent_mean"], columns.get("label"),
                         columns.get("observed"))  # fmt: skip


def sample_rows(ds: ray.data.Dataset, rows: int, sample_rows: int, seed: int = SAMPLE_SEED) -> dict[str, np.ndarray]:
    """A seeded random sample of at most `sample_rows` of the `rows` rows of an encoded dataset, as arrays on the
    driver ({"x": (N, D), ["c", "observed", "label"]}, N <= sample_rows); every row when `rows <= sample_rows`."""
    return _collect(_sampled(ds, rows, sample_rows, seed), sample_rows)


def _sampled(ds: ray.data.Dataset, rows: int, sample_rows: int, seed: int) -> ray.data.Dataset:
    """A seeded Bernoulli sample of `ds` (`rows` rows) expecting `sample_rows` rows; `ds` itself when it is smaller."""
    return ds.random_sample(sample_rows / rows, seed=seed) if rows > sample_rows else ds


def _collect(ds: ray.data.Dataset, limit: int) -> dict[str, np.ndarray]:
    """The first `limit` rows `ds` yields, column by column, on the driver; the rest is never read (a Bernoulli
    sample can run a few rows over its expected size)."""
    parts: list[dict[str, np.ndarray]] = []
    kept = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        parts.append(batch)
        kept += len(next(iter(batch.values())))
        if kept >= limit:
            break
    return {name: np.concatenate([part[name] for part in parts])[:limit] for name in parts[0]}


def drop_seen(rows: dict[str, np.ndarray], train: ray.data.Dataset) -> dict[str, np.ndarray]:
    """`rows` ({"x": (N, D), ["c", "observed", "label"]} on the driver) less those that repeat a row of the encoded
    dataset `train` (the same x, c and missing-value mask), found in one Ray Data pass over `train` that sends back
    only the hashes of the repeated rows (`vae.selection.row_hashes`)."""
    hashes = row_hashes(*_row_parts(rows))
    repeated = train.map_batches(_repeated_hashes, fn_kwargs={"wanted": hashes}, batch_format="numpy")
    found = [batch["hash"] for batch in repeated.iter_batches(batch_size=None, batch_format="numpy")]
    keep = ~np.isin(hashes, np.concatenate(found)) if found else np.ones(len(hashes), dtype=bool)
    return {name: column[keep] for name, column in rows.items()}


def _row_parts(batch: dict[str, np.ndarray]) -> tuple[np.ndarray | None, ...]:
    return batch["x"], batch.get("c"), batch.get("observed")


def _repeated_hashes(batch: dict[str, np.ndarray], wanted: np.ndarray) -> dict[str, np.ndarray]:
    """{"hash": (K,)}: the hashes among `wanted` of the batch's rows, each once."""
    hashes = row_hashes(*_row_parts(batch))
    return {"hash": np.unique(hashes[np.isin(hashes, wanted)])}
