"""`python -m pipelines evaluate --config pipelines/configs/evaluate.yaml [--promote] [key=value ...]`

Champion/challenger evaluation on labelled rows, in-process: resolve both aliases -> check the rows against the
models' columns -> read a seeded random sample of at most `labelled_rows` of them (every row of a smaller set),
batch by batch -> score it with each registered Detector and with two baselines
fitted on a seeded random sample of the training rows (at most `baseline_rows`, read batch by batch) -> AUROC,
average precision and precision/recall/F1 at each threshold -> one MLflow run with the numbers and a ROC /
precision-recall figure -> the promotion gate (`promotion.decide`): the challenger must reach the `floor` and beat
every baseline, and against a champion gain more than the `margin` with a seeded paired bootstrap interval of the
gain above zero; with --promote, `champion` moves to the challenger when it passes, and the decision, its reason
and every number behind it are recorded on the run and on the challenger's model version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.cli import config_parser
from pipelines.runtime.batch_inference import category_labels, feature_columns
from pipelines.runtime.parquet_checks import DataError, check_label, check_parquet, open_parquet
from pipelines.runtime.parquet_sample import sample_parquet
from pipelines.runtime.row_encoding import left_out_rows, table_preprocessors
from pipelines.settings.model_jobs import EvaluateConfig
from pipelines.settings.yaml_configs import load_config
from pipelines.tracking import plots
from pipelines.tracking.registry import load_registered_detector, resolve_model_version, version_by_alias
from pipelines.tracking.runs import Tracker, TrackingError, flatten, resolve_tracking_uri, tracked_run
from vae import Detector, calibrate_threshold
from vae.value_screen import UNUSABLE

from .promotion import (
    METRIC_TITLES,
    METRICS,
    Decision,
    Gate,
    decide,
    gain_interval,
    isolation_forest_scores,
    metrics,
    pca_reconstruction_scores,
    ranked_finite,
)

BASELINE_VERSION = "baseline"


@dataclass
class EvaluationOutcome:
    model_name: str
    challenger_version: str
    previous_champion: str | None  # the champion's version before this evaluation; None when there was none
    versions: dict[str, str]  # row name (challenger, champion, isolation_forest, pca) -> model version or "baseline"
    results: dict[str, dict[str, float]]  # row name -> metric name -> value (see promotion.METRICS)
    metric: str
    decision: Decision
    applied: bool  # --promote was given: the alias and version tags follow the decision
    run_id: str
    tracking_uri: str

    @property
    def champion_version(self) -> str | None:
        """The champion's version after this evaluation."""
        moved = self.applied and self.decision.moves_champion
        return self.challenger_version if moved else self.previous_champion


def read_labelled(path: str, label: str, rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded random sample of at most `rows` rows of a labelled Parquet input (all of them when it holds no
    more), and their labels (N,); DataError when the label column is absent, not 0/1 or holds one class only."""
    names = open_parquet(path).schema.names
    if label not in names:
        raise DataError(f"{path}: label column {label!r} not found; it has {names}")
    check_label(path, check_parquet(path, (label,), ()).schema, label)
    rows = sample_parquet(path, names, rows, seed).to_pandas()
    values = rows[label]
    if values.isna().any() or not values.isin([0, 1]).all():
        bad = sorted(set(values[values.isna() | ~values.isin([0, 1])].astype(str)))[:5]
        raise DataError(f"{path}: label column {label!r} must hold 0 (normal) or 1 (anomaly); found {bad}")
    labels = values.to_numpy(dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise DataError(f"{path}: label column {label!r} holds only {labels[0]}: AUROC needs both classes")
    return rows, labels


def check_features(path: str, detectors: list[Detector]) -> list[str]:
    """The columns the detectors read, after checking the Parquet at `path` has them (DataError otherwise)."""
    numeric = [c for d in detectors for c in feature_columns(d)[0]]
    categorical = [c for d in detectors for c in feature_columns(d)[1]]
    labels = {c: labels for d in detectors for c, labels in category_labels(d).items()}
    check_parquet(path, tuple(dict.fromkeys([*numeric, *categorical])), tuple(dict.fromkeys(numeric)), None, labels)
    return list(dict.fromkeys([*numeric, *categorical]))


def _scored(what: str, compute):
    """compute() with the preprocessor's refusals (e.g. missing values under `missing: error`) as a DataError."""
    try:
        return compute()
    except ValueError as err:
        raise DataError(f"cannot score the rows with {what}: {err}") from err


def _threshold(detector: Detector, who: str) -> float:
    if detector.threshold is None:
        raise TrackingError(f"model {who} has no calibrated threshold")
    return detector.threshold


def usable_training_rows(train: pd.DataFrame, detector: Detector) -> pd.DataFrame:
    """The baselines' training rows without those training leaves out (`left_out_rows`: infinite, huge or out of
    the training range), whose count is printed; raises DataError when none is left."""
    left_out = left_out_rows(train, table_preprocessors(detector.preprocessor, detector.condition))
    if left_out.all():
        raise DataError(f"none of the {len(train):,} baseline training rows is usable: each has an infinite or "
                        "out-of-range value")  # fmt: skip
    if left_out.any():
        print(f"{int(left_out.sum()):,} baseline training rows left out, as training leaves them out ({UNUSABLE})")
    return train[~left_out]


def baseline_scores(
    detector: Detector, train: pd.DataFrame, rows: pd.DataFrame, config: EvaluateConfig
) -> dict[str, tuple[np.ndarray, float]]:
    """Baseline name -> (scores of `rows` (N,), threshold). Both are fitted on the training rows encoded by the
    detector's own preprocessor (standardized numeric columns, one-hot categories); each threshold is the
    detector's contamination (or quantile) of the baseline's training scores, so P/R/F1 compare like with like."""
    x_train, x = detector.preprocessor.transform(train), detector.preprocessor.transform(rows)
    fitted = {
        "isolation_forest": isolation_forest_scores(x_train, x, config.seed),
        "pca": pca_reconstruction_scores(x_train, x, config.pca_variance),
    }
    sc = detector.score_config
    return {row: (s, calibrate_threshold(s_train, sc.contamination, sc.quantile)) for row, (s_train, s) in
            fitted.items()}  # fmt: skip


def run(config: EvaluateConfig, promote: bool = False) -> EvaluationOutcome:
    """Evaluate the challenger against the champion and the baselines; with `promote`, apply the gate.

    Everything that can fail on bad input (labels, aliases, columns) is checked before the MLflow run starts:
    DataError for the rows, TrackingError for the registry.
    """
    rows, labels = read_labelled(config.input, config.label, config.labelled_rows, config.seed)
    uri = resolve_tracking_uri(config.tracking)
    name = config.model_name
    versions = {"challenger": resolve_model_version(name, config.challenger, None, uri)}
    previous_champion = version_by_alias(name, config.champion, uri)
    if previous_champion not in (None, versions["challenger"]):
        versions["champion"] = previous_champion
    detectors = {row: load_registered_detector(f"models:/{name}/{v}", uri) for row, v in versions.items()}
    thresholds = {row: _threshold(d, f"{name}/{versions[row]}") for row, d in detectors.items()}
    check_features(config.input, list(detectors.values()))
    train = None
    if config.baselines:
        columns = check_features(config.train, [detectors["challenger"]])
        sample = sample_parquet(config.train, columns, config.baseline_rows, config.seed).to_pandas()
        train = usable_training_rows(sample, detectors["challenger"])

    scores = {}
    for row, detector in detectors.items():
        scores[row] = _scored(f"{name}/{versions[row]}", lambda d=detector: d.score(rows, seed=config.seed)[0])
    if train is not None:
        fitted = _scored("the baselines", lambda: baseline_scores(detectors["challenger"], train, rows, config))
        for row, (row_scores, threshold) in fitted.items():
            versions[row], scores[row], thresholds[row] = BASELINE_VERSION, row_scores, threshold
    scores = {row: ranked_finite(values, thresholds[row]) for row, values in scores.items()}
    results = {row: metrics(labels, scores[row], thresholds[row]) for row in scores}

    decision = decide(
        Gate(config.metric, config.floor, config.margin, config.confidence),
        (f"{name}/{versions['challenger']}", results["challenger"][config.metric]),
        {row: results[row][config.metric] for row in results if versions[row] == BASELINE_VERSION},
        _incumbent(config, name, previous_champion, labels, scores, results),
    )
    outcome = EvaluationOutcome(name, versions["challenger"], previous_champion, versions, results, config.metric,
                                decision, promote, "", uri)  # fmt: skip
    _record(config, outcome, labels, scores)
    return outcome


def _incumbent(
    config: EvaluateConfig, name: str, champion: str | None, labels: np.ndarray, scores: dict, results: dict
) -> tuple[str, float, tuple[float, float] | None] | None:
    """The champion as the gate sees it: (label, metric value, bootstrap interval of the challenger's gain), the
    interval None when the champion is the challenger itself; None when there is no champion."""
    if champion is None:
        return None
    if "champion" not in scores:  # the challenger already is the champion
        return f"{name}/{champion}", results["challenger"][config.metric], None
    interval = gain_interval(labels, scores["challenger"], scores["champion"], config.metric, config.confidence,
                             config.resamples, config.seed)  # fmt: skip
    return f"{name}/{champion}", results["champion"][config.metric], interval


def _record(config: EvaluateConfig, outcome: EvaluationOutcome, labels: np.ndarray, scores: dict) -> None:
    """One MLflow run with the numbers, the curves and the decision; with --promote, the alias and the
    challenger version's tags follow (the run's record first, so a failure never leaves an unexplained alias)."""
    name, version = outcome.model_name, outcome.challenger_version
    tracker = Tracker(config.tracking)
    params = {
        **flatten(dataclasses.asdict(config)), "challenger_version": version,
        "champion_version": outcome.previous_champion or "none", "promote": str(outcome.applied),
    }  # fmt: skip
    reason = outcome.decision.reason if outcome.applied else f"dry run (no --promote): {outcome.decision.reason}"
    with tracked_run(tracker, f"evaluate-{name}-v{version}", params, resume=False) as tracked:
        outcome.run_id = tracked.run_id
        tracker.log_metrics({f"{row}_{m}": v for row, values in outcome.results.items() for m, v in values.items()})
        tracker.log_metrics({f"gate_{k}": v for k, v in outcome.decision.numbers.items()})
        curves = {f"{row} {_label(outcome, row)}": scores[row] for row in outcome.results}
        tracker.log_figure(plots.roc_pr_curves(labels, curves), "plots/roc_precision_recall.png")
        decision_tags = {"vae.promotion.decision": outcome.decision.kind, "vae.promotion.reason": reason}
        tracker.set_tags({**decision_tags, "vae.promotion.applied": outcome.applied,
                          "vae.model": f"{name}/{version}"})  # fmt: skip
        if outcome.applied:
            if outcome.decision.moves_champion:
                tracker.set_alias(name, config.champion, version)
            evaluation = {f"vae.evaluation.{m}": f"{v:.6g}" for m, v in outcome.results["challenger"].items()}
            evaluation |= {f"vae.promotion.{k}": f"{v:.6g}" for k, v in outcome.decision.numbers.items()}
            tracker.set_version_tags(name, version, {**decision_tags, **evaluation,
                                                     "vae.evaluation.run_id": outcome.run_id})  # fmt: skip


def _label(outcome: EvaluationOutcome, row: str) -> str:
    """e.g. "thyroid-vae/3 (AUROC 0.9712)" or "baseline (AUROC 0.9511)"."""
    version = outcome.versions[row]
    who = version if version == BASELINE_VERSION else f"{outcome.model_name}/{version}"
    return f"{who} ({METRIC_TITLES[outcome.metric]} {outcome.results[row][outcome.metric]:.4f})"


def report(outcome: EvaluationOutcome) -> None:
    """A markdown table (one row per model and baseline) and the promotion decision."""
    print("| model | version | AUROC | AP | precision | recall | F1 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row, values in outcome.results.items():
        numbers = " | ".join(f"{values[m]:.4f}" for m in METRICS)
        print(f"| {row} | {outcome.versions[row]} | {numbers} |")
    if outcome.applied:
        print(f"\npromotion: {outcome.decision.kind}. {outcome.decision.reason}")
    else:
        print(f"\npromotion gate (dry run; --promote applies it): {outcome.decision.kind}. {outcome.decision.reason}")
    champion = outcome.champion_version
    print(f"champion: {f'{outcome.model_name}/{champion}' if champion else 'none'}; "
          f"MLflow run {outcome.run_id} at {outcome.tracking_uri}")  # fmt: skip


def main(argv: list[str] | None = None) -> EvaluationOutcome:
    parser = config_parser("evaluate", __doc__, "evaluate.yaml", "margin=0.01 metric=average_precision")
    parser.add_argument("--promote", action="store_true", help="move the champion alias when the challenger wins")
    args = parser.parse_args(argv)
    outcome = run(load_config(args.config, args.overrides, cls=EvaluateConfig), promote=args.promote)
    report(outcome)
    return outcome
