"""The scoring job's Ray side, one streaming pass: Ray Data actors, each handed the model the driver loaded, set
aside the rows that cannot be scored with their reason and score the others; write tasks store both and tally
them; a progress line every few seconds while they run."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data

from pipelines.settings.model_jobs import ScoreJobConfig
from vae import Detector, ImagePreprocessor, Preprocessor
from vae.preprocessing import float_values

from .cluster import data_context_values, map_batches_on_actors
from .row_encoding import table_preprocessors
from .scored_output import INPUT, REASON, STATUS, ScoresSink, Tally

PROGRESS_EVERY_S = 5.0
# The share of the object store the pass may fill (Ray Data's default: half). Reading runs ahead of scoring, so
# with the default a long input filled ~3.5 GB here with blocks waiting for the actors; a tenth streams as fast.
OBJECT_STORE_FRACTION = 0.1


@dataclass
class ScoringPlan:
    """What one run scores, resolved before Ray starts."""

    model_name: str
    model_version: str
    tracking_uri: str
    threshold: float
    keys: list[str]
    numeric: list[str]  # numeric-valued feature columns
    categorical: list[str]
    quarantine_unseen: bool  # rows with a category unseen in training are set aside, not scored
    rows: int
    image_column: str | None = None  # an image model's pixel column
    key_schema: pa.Schema | None = None  # the key columns' types, merged over the input's files (`check_parquet`)

    @property
    def columns(self) -> list[str]:
        image = [self.image_column] if self.image_column else []
        return list(dict.fromkeys([*self.keys, *image, *self.numeric, *self.categorical]))


def feature_columns(detector: Detector) -> tuple[list[str], list[str]]:
    """(numeric-valued, categorical) raw input columns the model needs, besides an image column."""
    pres = table_preprocessors(detector.preprocessor, detector.condition)
    numeric = [c for p in pres for c in (*p.numeric, *p.binary)]
    return numeric, [c for p in pres for c in p.categorical]


def category_labels(detector: Detector) -> dict[str, tuple[str, list[str]]]:
    """Categorical input column -> the label kind of its training values and its training labels."""
    pres = table_preprocessors(detector.preprocessor, detector.condition)
    return {c: (p.label_kinds.get(c, "text"), p.categories[c]) for p in pres for c in p.categorical}


def feature_baseline(detector: Detector) -> np.ndarray:
    """(F,) each feature's typical score contribution on the calibration rows, over the rows that have it
    (`Detector.calibrate`); zeros for a model calibrated without contributions."""
    reference = None if detector.calibration is None else detector.calibration.reference
    return np.zeros(len(detector.feature_names)) if reference is None else np.asarray(reference, dtype=np.float64)


def top_features(contributions: np.ndarray, baseline: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k features that explain each of N scores most: (N, k) feature indices and (N, k) their shares of the
    row's contribution beyond the `baseline` (F,), largest first."""
    excess = np.clip(contributions - baseline, 0.0, None)  # (N, F) beyond the typical contribution
    shares = excess / np.maximum(excess.sum(1, keepdims=True), 1e-12)
    order = np.argsort(-excess, axis=1)[:, :k]
    return order, np.take_along_axis(shares, order, 1)


def quarantine_reasons(
    batch: pd.DataFrame,
    features: Preprocessor | ImagePreprocessor,
    condition: Preprocessor | None,
    quarantine_unseen: bool,
) -> pd.DataFrame:
    """Adds `quarantine_reason` to a batch of N raw rows: why a row cannot be scored ("; "-joined), or None.

    A row is unscorable with an infinite feature, a number out of the training range
    (`Preprocessor.out_of_range_mask`), a category unseen in training when `quarantine_unseen`, an image that an
    image model's `features` cannot use (missing, of another size, with NaN/inf or out-of-range pixels), or a
    missing condition value. A missing feature value (null, NaN) is scored, left out of the score as
    `Detector.score` leaves it out, when the model's missing policy is "impute" (the default); a row with no
    feature value at all, or with a missing one under "error", is set aside. The checks are vectorised; reason
    strings are built for the unscorable rows only.
    """
    checks: list[tuple[np.ndarray, str]] = []  # (N,) mask, reason
    for pre in table_preprocessors(features, condition):
        scored_missing = pre is features and pre.missing == "impute"
        far, unseen = pre.out_of_range_mask(batch), pre.unknown_mask(batch) if quarantine_unseen else {}
        absent = {}  # column -> (N,) null or NaN
        for column in [*pre.numeric, *pre.binary]:
            values = float_values(batch, column)
            absent[column] = np.isnan(values)
            checks += [(np.isinf(values), f"{column} is not finite"),
                       (far.get(column), f"{column} is out of the training range")]  # fmt: skip
        absent |= {column: np.equal(pre.labels(batch, column), None) for column in pre.categorical}
        checks += [(unseen.get(column), f"{column} has an unseen category") for column in pre.categorical]
        if scored_missing:
            checks.append((np.logical_and.reduce(list(absent.values())), "no feature has a value"))
        else:
            checks += [(mask, f"{column} is missing") for column, mask in absent.items()]
    checks = [(np.asarray(mask, dtype=bool), reason) for mask, reason in checks if mask is not None]
    bad = np.zeros(len(batch), dtype=bool)
    for mask, _ in checks:
        bad |= mask
    image_problems = features.problems(batch) if isinstance(features, ImagePreprocessor) else None
    if image_problems is not None:
        bad |= np.array([problem is not None for problem in image_problems], dtype=bool)
    reasons = np.full(len(batch), None, dtype=object)
    for i in np.flatnonzero(bad):
        found = [image_problems[i]] if image_problems is not None and image_problems[i] is not None else []
        reasons[i] = "; ".join(found + [reason for mask, reason in checks if mask[i]])
    return batch.assign(**{REASON: pd.Series(reasons, index=batch.index, dtype=object)})


def input_json(rows: pd.DataFrame) -> list[str]:
    """Each of N rows as one JSON object of its columns (numbers to 15 digits, missing values null); +-inf, which
    JSON has no number for, as the strings "inf" and "-inf", so a quarantined row keeps the value it was set
    aside for."""
    floats = rows.select_dtypes("floating").columns
    marked = rows.astype({column: object for column in floats})
    for column in floats:
        marked.loc[rows[column] == np.inf, column] = "inf"
        marked.loc[rows[column] == -np.inf, column] = "-inf"
    records = json.loads(marked.to_json(orient="records", double_precision=15))
    return [json.dumps(values) for values in records]


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Rows scored so far, summed over every scoring actor."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


def stored_keys(keys: pa.Schema) -> pa.Schema:
    """The key columns as the scores table stores them: as read, except a dictionary (a pandas category) as its
    values' type, which Iceberg can hold."""
    return pa.schema([pa.field(k.name, k.type.value_type if pa.types.is_dictionary(k.type) else k.type) for k in keys])


def output_schema(keys: pa.Schema, top_features: int) -> pa.Schema:
    """The scores table's columns, in order: the `keys` as read (`stored_keys`), a scored row's score, flag and
    top features (null for a quarantined row), its status, a quarantined row's reason and input (JSON), and the
    run's constants."""
    top = [pa.field(f"top_feature_{rank}{part}", kind) for rank in range(1, top_features + 1)
           for part, kind in (("", pa.string()), ("_share", pa.float64()))]  # fmt: skip
    return pa.schema([
        *stored_keys(keys), pa.field("anomaly_score", pa.float64()), pa.field("is_anomaly", pa.bool_()), *top,
        pa.field(STATUS, pa.string()), pa.field(REASON, pa.string()), pa.field(INPUT, pa.string()),
        pa.field("model_name", pa.string()), pa.field("model_version", pa.string()),
        pa.field("run_date", pa.string()), pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ])  # fmt: skip


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order and type; a column it lacks is all null."""
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]  # fmt: skip
    return pa.table(columns, schema=schema)


class ScoreActor:
    """Ray Data callable class: sets aside the rows of a pandas batch that cannot be scored, with their reason,
    and scores the others with the detector it was given (moved to the actor's GPU when it has one).

    Returns one table per batch in the scores table's schema (`job["schema"]`, see `output_schema`): scored rows
    with status "scored", quarantined rows with status "quarantined", their reason and their input as JSON."""

    def __init__(self, detector: Detector, job: dict, counter) -> None:
        self.detector = detector
        self.detector.score_config = dataclasses.replace(
            self.detector.score_config, **{k: v for k, v in (("kind", job["kind"]), ("samples", job["samples"])) if v}
        )
        if ray.get_gpu_ids():  # the GPUs Ray gave this actor (gpus_per_actor), not merely visible ones
            self.detector.model.to("cuda")
        self.job = job
        self.baseline = feature_baseline(detector)
        self.names = pa.array(self.detector.feature_names, pa.string())
        self.schema: pa.Schema = job["schema"]
        self.constants = pa.table({  # one row, repeated into every batch
            "model_name": [job["model_name"]], "model_version": [job["model_version"]],
            "run_date": [job["run_date"]], "scored_at": [pd.Timestamp(job["scored_at"])],
        })  # fmt: skip
        self.counter = counter

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        tagged = quarantine_reasons(batch, self.detector.preprocessor, self.detector.condition,
                                    self.job["quarantine_unseen"])  # fmt: skip
        bad = tagged[REASON].notna().to_numpy()
        parts = [self._score(batch[~bad])] if (~bad).any() else []
        if bad.any():
            parts.append(self._quarantined(tagged[bad]))
        self.counter.add.remote(len(batch))
        return pa.concat_tables([_conform(part, self.schema) for part in parts])

    def _with_constants(self, columns: dict[str, pa.Array], rows: int) -> pa.Table:
        constants = self.constants.take(pa.array(np.zeros(rows, dtype=np.int64)))
        columns.update(zip(constants.column_names, constants.columns, strict=True))
        return pa.table(columns)

    def _quarantined(self, rows: pd.DataFrame) -> pa.Table:
        """A batch of quarantined rows: keys, status, reason and the other input columns as one JSON object."""
        keys = list(self.job["keys"])
        columns = {key: pa.Array.from_pandas(rows[key]) for key in keys}
        columns[STATUS] = pa.array(["quarantined"] * len(rows))
        columns[REASON] = pa.array(rows[REASON].tolist(), pa.string())
        columns[INPUT] = pa.array(input_json(rows.drop(columns=[*keys, REASON])), pa.string())
        return self._with_constants(columns, len(rows))

    def _score(self, batch: pd.DataFrame) -> pa.Table:
        """A batch of N scorable rows, built as Arrow columns (feature names by index into the names, the run's
        constants repeated), with no Python object per row."""
        scores, contributions = self.detector.score(batch, batch_size=len(batch))
        columns = {key: pa.Array.from_pandas(batch[key]) for key in self.job["keys"]}
        columns["anomaly_score"], columns["is_anomaly"] = pa.array(scores), pa.array(scores > self.job["threshold"])
        order, top_shares = top_features(contributions, self.baseline, self.job["top_features"])
        for rank in range(order.shape[1]):
            columns[f"top_feature_{rank + 1}"] = self.names.take(pa.array(order[:, rank]))
            columns[f"top_feature_{rank + 1}_share"] = pa.array(top_shares[:, rank])
        columns[STATUS] = pa.array(np.full(len(batch), "scored"))
        return self._with_constants(columns, len(batch))


def _report_progress(counter, total: int, stop: threading.Event) -> None:
    start = time.perf_counter()
    while not stop.wait(PROGRESS_EVERY_S):
        rows = ray.get(counter.value.remote())
        elapsed = time.perf_counter() - start
        if rows:  # nothing to say while the actors load the model
            print(f"scored {rows:,}/{total:,} rows  ({rows / elapsed:,.0f} rows/s)", flush=True)


def score_into(sink: ScoresSink, config: ScoreJobConfig, scoring: ScoringPlan, detector: Detector) -> Tally:
    """Score the input in one streaming pass with Ray Data and write every row, scored or quarantined, with
    `sink` (nothing is committed yet: see `ScoresSink.commit`); returns what the write tasks tallied."""
    rows = ray.data.read_parquet(config.input_path).select_columns(scoring.columns)
    keys = scoring.key_schema  # every file's types merged: Ray Data's schema is the first file's (null if empty)
    job = {
        "keys": scoring.keys, "threshold": scoring.threshold, "kind": config.kind, "samples": config.samples,
        "top_features": config.top_features, "model_name": scoring.model_name, "model_version": scoring.model_version,
        "run_date": config.date, "scored_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "quarantine_unseen": scoring.quarantine_unseen, "schema": output_schema(keys, config.top_features),
    }  # fmt: skip
    counter = ProgressCounter.remote()
    pool = ray.data.ActorPoolStrategy(min_size=config.actors, max_size=config.max_actors or config.actors)
    with data_context_values(override_object_store_memory_limit_fraction=OBJECT_STORE_FRACTION):
        scored = map_batches_on_actors(
            rows, ScoreActor, fn_constructor_kwargs={"detector": detector, "job": job, "counter": counter},
            batch_size=config.batch_size, batch_format="pandas", compute=pool,
            num_cpus=config.cpus_per_actor, num_gpus=config.gpus_per_actor or None,
        )  # fmt: skip
    stop = threading.Event()
    reporter = threading.Thread(target=_report_progress, args=(counter, scoring.rows, stop), daemon=True)
    reporter.start()
    try:
        scored.write_datasink(sink)
    finally:
        stop.set()
        reporter.join()
    return sink.tally
