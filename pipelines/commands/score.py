"""`python -m pipelines score --config pipelines/configs/score.yaml input=... output=... model=NAME@ALIAS
run_date=YYYY-MM-DD`

The nightly job: resolve the registered model -> check the input's schema against it (before Ray starts) ->
Ray Data, in one streaming pass: read Parquet, set aside rows that cannot be scored (with a reason) and score the
rest on actors handed the model once, write both as data files of the scores table and tally them -> check that
every row read was written -> log the run, its drift signal and a histogram to MLflow -> replace the run date's
rows of the Iceberg table in one catalog commit.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.cli import run_config_command
from pipelines.runtime.batch_inference import (
    ScoringPlan,
    category_labels,
    feature_columns,
    output_schema,
    score_into,
    stored_keys,
)
from pipelines.runtime.cluster import ray_session, require_local_resources
from pipelines.runtime.parquet_checks import DataError, check_parquet, check_ray_readable
from pipelines.runtime.scored_output import SAMPLE_ROWS, ScoresSink, Tally
from pipelines.runtime.shared_storage import require_shared
from pipelines.settings.model_jobs import MODEL_SPEC, ScoreJobConfig
from pipelines.settings.yaml_configs import resolve_path
from pipelines.storage import filesystems
from pipelines.storage.fault_points import FaultPlan
from pipelines.storage.scores_table import SNAPSHOT_JOB, SNAPSHOT_MODEL, SNAPSHOT_ROWS, ScoresTable
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
    table: str  # the Iceberg table's identifier
    snapshot: int  # the snapshot that holds this run's rows
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
    keys = list(config.key or detector.metadata.get("key_columns", ()))
    taken = [k for k in keys if k in output_schema(pa.schema([]), config.top_features).names]
    if taken:
        raise ConfigError(f"key column(s) {taken} have the name of a column the scores table adds; rename them in "
                          "the input")  # fmt: skip
    image = detector.preprocessor if isinstance(detector.preprocessor, ImagePreprocessor) else None
    scoring = ScoringPlan(spec["name"], version, tracking_uri, _threshold(config, detector), keys, numeric,
                          categorical, config.unknown_categories == "quarantine", rows=0,
                          image_column=image and image.column)  # fmt: skip
    labels = category_labels(detector)
    check_ray_readable(config.input_path)
    checked = check_parquet(config.input_path, tuple(scoring.columns), tuple(numeric), image, labels)
    scoring.rows, scoring.key_schema = checked.rows, stored_keys(pa.schema([checked.schema.field(k) for k in keys]))
    return scoring, detector


def check_every_row_written(input_path: str, rows: int, tally: Tally) -> None:
    """Raise DataError unless the job wrote (scored or quarantined) as many rows as the input's footers count."""
    if tally.rows != rows:
        raise DataError(f"{input_path}: its Parquet footers count {rows:,} rows but the job wrote {tally.rows:,} "
                        f"(did the files change while it ran?); nothing was published")  # fmt: skip


def run(config: ScoreJobConfig) -> ScoreSummary:
    """Score one run date; raises DataError / ConfigError / TrackingError / CatalogError on bad input, before
    writing, and ConcurrentRunError when another attempt committed the same date while this one ran."""
    started = time.perf_counter()
    scoring, detector = plan(config)
    date, output = config.date, resolve_path(config.output)
    if filesystems.contains(config.input_path, output):  # the next night would read the table's files as input
        raise ConfigError(f"output {config.output} is inside the input {config.input_path}: write the scores elsewhere")
    require_local_resources(config.ray_address, config.local_cpus, config.cpus_per_actor, config.gpus_per_actor,
                            "a scoring actor", setting="local_cpus")  # fmt: skip
    table = ScoresTable.at(output, config.table, config.catalog)
    problems = table.key_problems(scoring.key_schema)  # reads the table, if there is one: creates nothing
    if problems:
        raise DataError(f"{config.input_path}: {'; '.join(problems)}")
    filesystems.check_writable(output)
    table.catalog()  # an unreachable catalog database fails here, before Ray starts
    tracker = Tracker(config.tracking)
    name = f"score-{scoring.model_name}-{date}"
    with ray_session(config.ray_address, config.local_cpus):
        require_shared(config.output, "output")
        with tracked_run(tracker, name, flatten(dataclasses.asdict(config)), resume=False) as tracked:
            tracker.set_tags({"vae.model": f"{scoring.model_name}/{scoring.model_version}", "vae.run_date": date})
            print(f"scoring {scoring.rows:,} rows of {config.input_path} with {scoring.model_name} version "
                  f"{scoring.model_version} for {date}; MLflow {scoring.tracking_uri} (run {tracked.run_id})",
                  flush=True)  # fmt: skip
            reference = detector.metadata.get("score_reference", {}).get("quantiles")
            sink = ScoresSink(table, date, reference, min(1.0, SAMPLE_ROWS / max(scoring.rows, 1)),
                              config.rows_per_file, FaultPlan.from_env())  # fmt: skip
            tally = score_into(sink, config, scoring, detector)
            return _publish(config, scoring, sink, tally, tracker, tracked.run_id, started)


def _publish(config: ScoreJobConfig, scoring: ScoringPlan, sink: ScoresSink, tally: Tally, tracker: Tracker,
             run_id: str, started: float) -> ScoreSummary:  # fmt: skip
    """Check that every row read was written, log the run, then commit the run date's rows: a tracking server
    that fails while the rows are scored fails the job before anything is published."""
    check_every_row_written(config.input_path, scoring.rows, tally)
    psi = population_stability_index(tally.deciles) if tally.scored and tally.deciles is not None else float("nan")
    model = f"{scoring.model_name}/{scoring.model_version}"
    summary = ScoreSummary(model, config.date, tally.rows, tally.scored, tally.quarantined, tally.anomalies, psi,
                           config.table, 0, time.perf_counter() - started)  # fmt: skip
    _log_run(tracker, summary, tally.sample, sink.reference_quantiles, scoring.threshold)
    summary.snapshot = sink.commit({SNAPSHOT_MODEL: model, SNAPSHOT_JOB: run_id, SNAPSHOT_ROWS: str(tally.rows)})
    tracker.set_tags({"vae.table": config.table, "vae.snapshot": str(summary.snapshot)})
    return summary


def _log_run(tracker: Tracker, summary: ScoreSummary, sample: np.ndarray, reference: list[float] | None,
             threshold: float) -> None:  # fmt: skip
    """The run's counts as metrics, and the score quantiles and plot from `sample` (S,), a uniform sample of
    the scores (all of them up to `SAMPLE_ROWS`), drawn against `reference`, the model's score quantiles (or None)."""
    metrics = {
        "rows_read": summary.rows_read, "rows_scored": summary.rows_scored,
        "rows_quarantined": summary.rows_quarantined, "anomalies": summary.anomalies,
        "anomaly_rate": summary.anomalies / max(summary.rows_scored, 1), "psi": summary.psi,
        "seconds": summary.seconds, "rows_per_s": summary.rows_read / max(summary.seconds, 1e-9),
    }  # fmt: skip
    if len(sample):
        metrics.update({f"score_p{q}": float(np.quantile(sample, q / 100)) for q in (50, 90, 99)})
        tracker.log_figure(plots.score_drift(sample, reference, threshold), "plots/scores_vs_reference.png")
    tracker.log_metrics(metrics)


def report(summary: ScoreSummary) -> None:
    print(f"{summary.run_date}: {summary.rows_read:,} rows read, {summary.rows_scored:,} scored, "
          f"{summary.rows_quarantined:,} quarantined, {summary.anomalies:,} anomalies "
          f"({summary.anomalies / max(summary.rows_scored, 1):.2%}), PSI {summary.psi:.3f}, model {summary.model}, "
          f"{summary.seconds:.1f} s -> {summary.table} snapshot {summary.snapshot}")  # fmt: skip


def main(argv: list[str] | None = None) -> ScoreSummary:
    return run_config_command(
        "score", __doc__, "score.yaml", "input=... run_date=2026-11-24", ScoreJobConfig, argv, run, report
    )
