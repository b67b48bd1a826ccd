"""`python -m pipelines score --config pipelines/configs/score.yaml input=... output=... model=NAME@ALIAS
run_date=YYYY-MM-DD`

The nightly job: resolve the registered model -> check the input's schema against it (before Ray starts) ->
Ray Data: read Parquet, set aside rows that cannot be scored (with a reason), score the rest on actors that
load the model once -> publish the run date's partition atomically -> log the run, its drift signal and a
histogram to MLflow.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import ray
import ray.data

from pipelines.cli import config_parser
from pipelines.runtime.cluster import ray_session
from pipelines.runtime.parquet_input import check_parquet, table_preprocessors
from pipelines.settings.model_jobs import MODEL_SPEC, ScoreJobConfig
from pipelines.settings.yaml_configs import load_config, resolve_path
from pipelines.storage import filesystems
from pipelines.storage.partitions import Staging, publish, stage
from pipelines.tracking import plots
from pipelines.tracking.monitoring import population_stability_index
from pipelines.tracking.runs import (
    Tracker,
    flatten,
    load_registered_detector,
    resolve_model_version,
    resolve_tracking_uri,
)
from vae import ConfigError, Detector, ImagePreprocessor, Preprocessor, check_score_kind

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


@dataclass
class ScoreSummary:
    model: str  # NAME/VERSION actually used
    run_date: str
    rows_read: int
    rows_scored: int
    rows_quarantined: int
    anomalies: int
    psi: float
    partition: str
    seconds: float


def _table_preprocessors(detector: Detector) -> list[Preprocessor]:
    return table_preprocessors(detector.preprocessor, detector.condition)


def feature_columns(detector: Detector) -> tuple[list[str], list[str]]:
    """(numeric-valued, categorical) raw input columns the model needs, besides an image column."""
    pres = _table_preprocessors(detector)
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


def _threshold(config: ScoreJobConfig, detector: Detector) -> float:
    """The job's threshold: `threshold=` as given, else the model's, which is only valid for the score it was
    calibrated on (a job that changes the score kind or sample count must give its own)."""
    if config.threshold is not None:
        return config.threshold
    if detector.calibration is None:
        raise ConfigError("ScoreJobConfig.threshold: the model has no calibrated threshold; set threshold=")
    calibrated = detector.calibration.score
    wanted = {"kind": config.kind, "samples": config.samples}
    changed = {k: v for k, v in wanted.items() if v is not None and v != getattr(calibrated, k)}
    if changed:
        was = ", ".join(f"{k}={getattr(calibrated, k)!r}" for k in changed)
        now = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        raise ConfigError(f"ScoreJobConfig.threshold: the model's threshold was calibrated with {was} but this job "
                          f"scores with {now}; set threshold= in the units of that score")  # fmt: skip
    return detector.calibration.threshold


def plan(config: ScoreJobConfig) -> tuple[ScoringPlan, Detector]:
    """Resolve the model and check the input against it; raises TrackingError / DataError / ConfigError."""
    tracking_uri = resolve_tracking_uri(config.tracking)
    spec = MODEL_SPEC.match(config.model)
    version = resolve_model_version(spec["name"], spec["alias"], spec["version"], tracking_uri)
    model_uri = f"models:/{spec['name']}/{version}"
    detector = load_registered_detector(model_uri, tracking_uri)
    check_score_kind(detector.objective, config.kind or detector.score_config.kind)
    numeric, categorical = feature_columns(detector)
    preprocessors = [p.to_dict() for p in _table_preprocessors(detector)]
    keys = list(config.key or detector.metadata.get("key_columns", ()))
    image = detector.preprocessor if isinstance(detector.preprocessor, ImagePreprocessor) else None
    scoring = ScoringPlan(spec["name"], version, model_uri, tracking_uri, _threshold(config, detector), keys, numeric,
                          categorical, preprocessors, config.unknown_categories == "quarantine", rows=0,
                          image=image and image.to_dict())  # fmt: skip
    scoring.rows = check_parquet(config.input_path, tuple(scoring.columns), tuple(numeric), image)
    return scoring, detector


def run(config: ScoreJobConfig) -> ScoreSummary:
    """Score one run date; raises DataError / ConfigError / TrackingError on bad input, before writing."""
    started = time.perf_counter()
    scoring, detector = plan(config)
    date, output = config.date, resolve_path(config.output)
    filesystems.check_writable(output)
    tracker = Tracker(config.tracking)
    run_id, _ = tracker.start(f"score-{scoring.model_name}-{date}", flatten(dataclasses.asdict(config)), resume=False)
    tracker.set_tags({"vae.model": f"{scoring.model_name}/{scoring.model_version}", "vae.run_date": date})
    print(f"scoring {scoring.rows:,} rows of {config.input_path} with {scoring.model_name} version "
          f"{scoring.model_version} for {date}; MLflow {scoring.tracking_uri} (run {run_id})", flush=True)  # fmt: skip
    ok = False
    try:
        with ray_session(config.ray_address, config.local_cpus):
            staging = stage(output, date)
            _score_into(staging, config, scoring)
        summary, scores = _summarize(staging, detector, scoring)
        summary.seconds = time.perf_counter() - started
        summary.partition = publish(staging, dataclasses.asdict(summary))
        _log_run(tracker, summary, scores, detector, scoring.threshold)
        ok = True
        return summary
    finally:
        tracker.end(ok)


def _score_into(staging: Staging, config: ScoreJobConfig, scoring: ScoringPlan) -> None:
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
    scored = tagged.map_batches(_keep, fn_kwargs={"quarantined": False}, batch_format="pandas").map_batches(
        ScoreActor,
        fn_constructor_kwargs={"model_uri": scoring.model_uri, "tracking_uri": scoring.tracking_uri, "job": job,
                               "counter": counter},
        batch_size=config.batch_size, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None,
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


def _read_column(location: str, column: str) -> np.ndarray:
    """One column of the Parquet files directly under `location` (not in its subdirectories), as (N,)."""
    fs, path = filesystems.filesystem(location)
    files = [f"{path}/{f}" for f in filesystems.list_files(location) if "/" not in f and f.endswith(".parquet")]
    if not files:
        return np.array([])
    return pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=[column]).column(column).to_numpy()


def _summarize(staging: Staging, detector: Detector, scoring: ScoringPlan) -> tuple[ScoreSummary, np.ndarray]:
    """The run's counts and drift signal, and its scores (N,), read once from the staged output."""
    scores = _read_column(staging.location, "anomaly_score")
    flags = _read_column(staging.location, "is_anomaly")
    reasons = _read_column(staging.quarantine, REASON)
    reference = detector.metadata.get("score_reference", {})
    psi = population_stability_index(scores, reference["quantiles"]) if len(scores) and reference else float("nan")
    model = f"{scoring.model_name}/{scoring.model_version}"
    summary = ScoreSummary(model, staging.run_date, scoring.rows, len(scores), len(reasons), int(flags.sum()), psi, "",
                           0.0)  # fmt: skip
    return summary, scores


def _log_run(tracker: Tracker, summary: ScoreSummary, scores: np.ndarray, detector: Detector, threshold: float) -> None:
    metrics = {
        "rows_read": summary.rows_read, "rows_scored": summary.rows_scored,
        "rows_quarantined": summary.rows_quarantined, "anomalies": summary.anomalies,
        "anomaly_rate": summary.anomalies / max(summary.rows_scored, 1), "psi": summary.psi,
        "seconds": summary.seconds, "rows_per_s": summary.rows_read / max(summary.seconds, 1e-9),
    }  # fmt: skip
    if len(scores):
        metrics.update({f"score_p{q}": float(np.quantile(scores, q / 100)) for q in (50, 90, 99)})
        reference = detector.metadata.get("score_reference", {}).get("quantiles")
        tracker.log_figure(plots.score_drift(scores, reference, threshold), "plots/scores_vs_reference.png")
    tracker.log_metrics(metrics)
    tracker.set_tags({"vae.partition": summary.partition})


def report(summary: ScoreSummary) -> None:
    print(f"{summary.run_date}: {summary.rows_read:,} rows read, {summary.rows_scored:,} scored, "
          f"{summary.rows_quarantined:,} quarantined, {summary.anomalies:,} anomalies "
          f"({summary.anomalies / max(summary.rows_scored, 1):.2%}), PSI {summary.psi:.3f}, model {summary.model}, "
          f"{summary.seconds:.1f} s -> {summary.partition}")  # fmt: skip


def main(argv: list[str] | None = None) -> ScoreSummary:
    args = config_parser("score", __doc__, "score.yaml", "input=... run_date=2026-11-24").parse_args(argv)
    summary = run(load_config(args.config, args.overrides, cls=ScoreJobConfig))
    report(summary)
    return summary
