"""The scoring job's Ray side: the rows that cannot be scored set aside with their reason, the others scored by
Ray Data actors that load the registered model once, and a progress line every few seconds while they write."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray
import ray.data

from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.storage.partitions import Staging
from pipelines.tracking.registry import load_registered_detector
from vae import Detector, ImagePreprocessor, Preprocessor

from .cluster import on_local_ray
from .row_encoding import table_preprocessors

REASON = "quarantine_reason"
PROGRESS_EVERY_S = 5.0


@dataclass
class ScoringPlan:
    """What one run scores, resolved before Ray starts."""

    model_name: str
    model_version: str
    model_uri: str  # models:/NAME/VERSION, pinned so every actor uses the same version
    tracking_uri: str
    threshold: float
    keys: list[str]
    numeric: list[str]  # numeric-valued feature columns
    categorical: list[str]
    preprocessors: list[dict]  # the model's column preprocessors' to_dict(), to find rows it cannot score
    quarantine_unseen: bool  # rows with a category unseen in training are set aside, not scored
    rows: int
    image: dict | None = None  # the image model's ImagePreprocessor.to_dict()

    @property
    def columns(self) -> list[str]:
        image = [self.image["column"]] if self.image else []
        return list(dict.fromkeys([*self.keys, *image, *self.numeric, *self.categorical]))


def feature_columns(detector: Detector) -> tuple[list[str], list[str]]:
    """(numeric-valued, categorical) raw input columns the model needs, besides an image column."""
    pres = table_preprocessors(detector.preprocessor, detector.condition)
    numeric = [c for p in pres for c in (*p.numeric, *p.binary)]
    return numeric, [c for p in pres for c in p.categorical]


def quarantine_reasons(
    batch: pd.DataFrame, preprocessors: list[dict], quarantine_unseen: bool, image: dict | None = None
) -> pd.DataFrame:
    """Adds `quarantine_reason` to a batch of N raw rows: why a row cannot be scored ("; "-joined), or None.

    `preprocessors` are the model's column preprocessors (`Preprocessor.to_dict()`). A row is unscorable with
    a missing, NaN or infinite feature, a number out of the training range (`Preprocessor.out_of_range_mask`),
    a category unseen in training when `quarantine_unseen`, or an image that `image` (an ImagePreprocessor's
    `to_dict()`) cannot use: missing, of another size, with NaN/inf or out-of-range pixels.
    """
    reasons: list[list[str]] = [[] for _ in range(len(batch))]

    def add(mask: np.ndarray | None, reason: str) -> None:
        for i in np.flatnonzero(mask) if mask is not None else ():
            reasons[i].append(reason)

    if image is not None:
        for row, problem in zip(reasons, ImagePreprocessor.from_dict(image).problems(batch), strict=True):
            if problem:
                row.append(problem)
    for pre in map(Preprocessor.from_dict, preprocessors):
        missing, far = pre.missing_mask(batch), pre.out_of_range_mask(batch)
        unseen = pre.unknown_mask(batch) if quarantine_unseen else {}
        for column in [*pre.numeric, *pre.binary]:
            add(missing.get(column), f"{column} is missing or not finite")
            add(far.get(column), f"{column} is out of the training range")
        for column in pre.categorical:
            add(missing.get(column), f"{column} is missing")
            add(unseen.get(column), f"{column} has an unseen category")
    joined = pd.Series([("; ".join(r) if r else None) for r in reasons], index=batch.index, dtype=object)
    return batch.assign(**{REASON: joined})


def _keep(batch: pd.DataFrame, quarantined: bool) -> pd.DataFrame:
    mask = batch[REASON].notna() == quarantined
    return batch[mask] if quarantined else batch[mask].drop(columns=[REASON])


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Rows scored so far, summed over every scoring actor."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


class ScoreActor:
    """Ray Data callable class: loads the registered model once, then scores pandas batches of raw rows."""

    def __init__(self, model_uri: str, tracking_uri: str, job: dict, counter) -> None:
        self.detector = load_registered_detector(model_uri, tracking_uri)
        self.detector.score_config = dataclasses.replace(
            self.detector.score_config, **{k: v for k, v in (("kind", job["kind"]), ("samples", job["samples"])) if v}
        )
        self.job = job
        reference = self.detector.metadata.get("score_reference", {})
        self.baseline = np.asarray(reference.get("feature_baseline", np.zeros(len(self.detector.feature_names))))
        self.names = np.asarray(self.detector.feature_names, dtype=object)
        self.counter = counter

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scores, contributions = self.detector.score(batch, batch_size=len(batch) or 1)
        out = batch[list(self.job["keys"])].reset_index(drop=True)
        out["anomaly_score"] = scores
        out["is_anomaly"] = scores > self.job["threshold"]
        excess = np.clip(contributions - self.baseline, 0.0, None)  # (N, F) beyond the typical contribution
        shares = excess / np.maximum(excess.sum(1, keepdims=True), 1e-12)
        order = np.argsort(-excess, axis=1)[:, : self.job["top_features"]]
        for rank in range(order.shape[1]):
            out[f"top_feature_{rank + 1}"] = self.names[order[:, rank]]
            out[f"top_feature_{rank + 1}_share"] = np.take_along_axis(shares, order[:, rank : rank + 1], 1)[:, 0]
        out["model_name"], out["model_version"] = self.job["model_name"], self.job["model_version"]
        out["run_date"], out["scored_at"] = self.job["run_date"], pd.Timestamp(self.job["scored_at"])
        self.counter.add.remote(len(batch))
        return out


def _report_progress(counter, total: int, stop: threading.Event) -> None:
    start = time.perf_counter()
    while not stop.wait(PROGRESS_EVERY_S):
        rows = ray.get(counter.value.remote())
        elapsed = time.perf_counter() - start
        if rows:  # nothing to say while the actors load the model
            print(f"scored {rows:,}/{total:,} rows  ({rows / elapsed:,.0f} rows/s)", flush=True)


def score_into(staging: Staging, config: ScoreJobConfig, scoring: ScoringPlan) -> None:
    """Write scored rows to the staging location and quarantined rows to its `_quarantine` with Ray Data."""
    tagged = (
        ray.data.read_parquet(config.input_path)
        .select_columns(scoring.columns)
        .map_batches(quarantine_reasons, batch_format="pandas", fn_kwargs={
            "preprocessors": scoring.preprocessors, "quarantine_unseen": scoring.quarantine_unseen,
            "image": scoring.image})
        .materialize()
    )  # fmt: skip
    job = {
        "keys": scoring.keys, "threshold": scoring.threshold, "kind": config.kind, "samples": config.samples,
        "top_features": config.top_features, "model_name": scoring.model_name, "model_version": scoring.model_version,
        "run_date": config.date, "scored_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }  # fmt: skip
    counter = ProgressCounter.remote()
    # Ray Data restarts a crashed actor by default; its constructor arguments are always in the object store, for
    # which Ray 2.60 logs an error line per actor on every run (ray-project/ray#57733). On a local Ray there is no
    # node to lose: an actor that crashes fails the job, which publishes nothing, and the console stays clean (a
    # `ray_remote_args` key, deprecated for named parameters that Ray 2.60 does not have for it yet).
    restarts = {"max_restarts": 0} if on_local_ray() else {}
    scored = tagged.map_batches(_keep, fn_kwargs={"quarantined": False}, batch_format="pandas").map_batches(
        ScoreActor,
        fn_constructor_kwargs={"model_uri": scoring.model_uri, "tracking_uri": scoring.tracking_uri, "job": job,
                               "counter": counter},
        batch_size=config.batch_size, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None, **restarts,
    )  # fmt: skip
    stop = threading.Event()
    reporter = threading.Thread(target=_report_progress, args=(counter, scoring.rows, stop), daemon=True)
    reporter.start()
    try:
        scored.write_parquet(staging.location)
    finally:
        stop.set()
        reporter.join()
    quarantined = tagged.map_batches(_keep, fn_kwargs={"quarantined": True}, batch_format="pandas")
    quarantined.write_parquet(staging.quarantine)
