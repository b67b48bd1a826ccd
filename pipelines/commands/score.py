"""`python -m pipelines score --config pipelines/configs/score.yaml input=... output=... model=NAME@ALIAS
run_date=YYYY-MM-DD`

The nightly job: resolve the registered model -> check the input's schema against it (before Ray starts) ->
Ray Data: read Parquet, set aside rows that cannot be scored (with a reason), score the rest on actors that
load the model once -> publish the run date's partition atomically -> log the run, its drift signal and a
histogram to MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pyarrow.dataset as pads

from pipelines.cli import run_config_command
from pipelines.runtime.batch_inference import REASON, ScoringPlan, feature_columns, score_into
from pipelines.runtime.cluster import ray_session
from pipelines.runtime.parquet_checks import check_parquet
from pipelines.runtime.row_encoding import table_preprocessors
from pipelines.settings.model_jobs import MODEL_SPEC, ScoreJobConfig
from pipelines.settings.yaml_configs import resolve_path
from pipelines.storage import filesystems
from pipelines.storage.partitions import Staging, publish, stage
from pipelines.tracking import plots
from pipelines.tracking.monitoring import population_stability_index
from pipelines.tracking.registry import load_registered_detector, resolve_model_version
from pipelines.tracking.runs import Tracker, flatten, resolve_tracking_uri, tracked_run
from vae import ConfigError, Detector, ImagePreprocessor, check_score_kind


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
    preprocessors = [p.to_dict() for p in table_preprocessors(detector.preprocessor, detector.condition)]
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
    name = f"score-{scoring.model_name}-{date}"
    with tracked_run(tracker, name, flatten(dataclasses.asdict(config)), resume=False) as tracked:
        tracker.set_tags({"vae.model": f"{scoring.model_name}/{scoring.model_version}", "vae.run_date": date})
        print(f"scoring {scoring.rows:,} rows of {config.input_path} with {scoring.model_name} version "
              f"{scoring.model_version} for {date}; MLflow {scoring.tracking_uri} (run {tracked.run_id})",
              flush=True)  # fmt: skip
        with ray_session(config.ray_address, config.local_cpus):
            staging = stage(output, date)
            score_into(staging, config, scoring)
        summary, scores = _summarize(staging, detector, scoring)
        summary.seconds = time.perf_counter() - started
        summary.partition = publish(staging, dataclasses.asdict(summary))
        _log_run(tracker, summary, scores, detector, scoring.threshold)
        return summary


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
    return run_config_command(
        "score", __doc__, "score.yaml", "input=... run_date=2026-11-24", ScoreJobConfig, argv, run, report
    )
