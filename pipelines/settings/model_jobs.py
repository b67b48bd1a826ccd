"""Configs of the jobs that work on a registered model: the scoring job, the champion/challenger evaluation,
generation and imputation. Loaded like every config, with
`pipelines.settings.yaml_configs.load_config(path, overrides, cls)`."""

from __future__ import annotations

import datetime
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from vae.config_base import (
    Count,
    Flag,
    Fraction,
    NonNegative,
    Number,
    Positive,
    PositiveInt,
    Text,
    config_class,
    number,
    require,
)
from vae.imputation import IMPUTATION_METHODS
from vae.likelihoods import GENERATION_MODES
from vae.scoring import SCORES

from .yaml_configs import Alias, ModelName, TrackingSettings, resolve_path

MODEL_SPEC = re.compile(r"^(?P<name>[^@/]+)(@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
Share = number(ge=0, le=1)  # a metric's value, never true or false (`floor: no` read as 0 would open the gate)


def _model_spec(value: str) -> str:
    if not MODEL_SPEC.match(value):
        raise ValueError("not NAME@ALIAS or NAME/VERSION")
    return value


def _run_date(value: str) -> str:
    if value:
        datetime.date.fromisoformat(value)  # ValueError: not a date
    return value


ModelSpec = Annotated[str, AfterValidator(_model_spec), Field(description="NAME@ALIAS or NAME/VERSION in the registry")]
RunDate = Annotated[
    str,
    BeforeValidator(lambda v: v.isoformat() if isinstance(v, datetime.date) else v),  # YAML reads 2026-01-02 as a date
    AfterValidator(_run_date),
    Field(description="a date YYYY-MM-DD, or empty for today (UTC)"),
]
ParquetFile = Annotated[str, Field(pattern=r"\.parquet$", description="a path ending in .parquet")]
TableName = Annotated[str, Field(pattern=r"^[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*$", description="namespace.table")]


@config_class
class ScoreJobConfig:
    """The scheduled scoring job: which model scores which rows into which run-date partition."""

    input: str  # Parquet file, directory or URI; "{run_date}" in it is replaced by the run date
    output: str = "outputs/scores"  # the Iceberg warehouse: local path, shared mount or s3:// URI
    table: TableName = "vae.scores"  # namespace.table in the catalog; each run replaces its run_date's rows
    catalog: str = ""  # SQLAlchemy URI of the catalog; empty: VAE_CATALOG_URI, else <output>/catalog.db (SQLite)
    model: ModelSpec = "vae-anomaly@champion"
    run_date: RunDate = ""
    key: tuple[str, ...] = ()  # id columns copied to the output; default: the model's key columns
    kind: Literal[tuple(SCORES)] | None = None  # default: the model's score kind
    samples: PositiveInt | None = None  # posterior samples (k for the NLL); default: the model's
    threshold: Number | None = None  # default: the model's calibrated threshold
    top_features: Count = 3
    unknown_categories: Literal["score", "quarantine"] = "score"  # score them in the unknown bucket, or set aside
    batch_size: PositiveInt = 4096
    rows_per_file: PositiveInt = 250_000  # rows a write task gathers before writing its data files
    actors: PositiveInt = 2  # scoring actors started before any row is scored
    max_actors: PositiveInt | None = None  # the pool grows to this many while rows wait and the cluster has room
    cpus_per_actor: Positive = 1.0
    gpus_per_actor: NonNegative = 0.0
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray
    local_cpus: PositiveInt = 4
    tracking: TrackingSettings = field(default_factory=lambda: TrackingSettings(experiment="vae-anomaly-scoring"))

    @model_validator(mode="after")
    def _paths_are_set(self) -> ScoreJobConfig:
        require(bool(self.input), self, "input", "set the Parquet file, directory or URI")
        require(bool(self.output), self, "output", "set the output directory or URI")
        require(self.max_actors is None or self.max_actors >= self.actors, self, "max_actors",
                f"must be at least actors ({self.actors}), got {self.max_actors}")  # fmt: skip
        return self

    @property
    def date(self) -> str:
        return str(self.run_date) if self.run_date else datetime.datetime.now(datetime.UTC).date().isoformat()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}"

    @property
    def input_path(self) -> str:
        """`input` with "{run_date}" replaced, so a schedule can name each night's partition."""
        return self.input.replace("{run_date}", self.date)


@config_class
class EvaluateConfig:
    """Champion/challenger evaluation on labelled rows, and the promotion gate (`evaluate --promote`).

    The registered model is `model_name`; `tracking.model_name` and `tracking.alias` are not used here.
    """

    input: str  # labelled Parquet rows (file, directory or URI)
    train: str = ""  # the rows the model was trained on: the baselines are fitted on them
    label: Text = "label"  # 1 = anomaly, 0 = normal
    model_name: ModelName = "vae-anomaly"
    challenger: Alias = "challenger"  # registry aliases
    champion: Alias = "champion"
    metric: Literal["auroc", "average_precision"] = "auroc"  # what the promotion gate compares
    floor: Share = 0.5  # the challenger's metric must reach it
    margin: NonNegative = 0.0  # the challenger must beat the champion's metric by more than this
    confidence: Fraction = 0.95  # ... and the bootstrap interval of that gain at this level must lie above zero
    resamples: PositiveInt = 200  # bootstrap resamples of the labelled rows for that interval
    seed: Count = 0  # posterior samples of the VAE scores, the IsolationForest and the row samples
    baselines: Flag = True  # IsolationForest and PCA reconstruction error, fitted on `train`
    pca_variance: Fraction = 0.5  # share of the training variance the PCA baseline's subspace keeps
    baseline_rows: PositiveInt = 50_000  # the baselines fit a seeded random sample of at most this many `train` rows
    labelled_rows: PositiveInt = 200_000  # the metrics use a seeded random sample of at most this many `input` rows
    tracking: TrackingSettings = field(default_factory=lambda: TrackingSettings(experiment="vae-anomaly-evaluation"))

    @model_validator(mode="after")
    def _rows_and_aliases(self) -> EvaluateConfig:
        require(bool(self.input), self, "input", "set the labelled Parquet file or directory")
        require(not self.baselines or bool(self.train), self, "train",
                "set the training rows the baselines are fitted on (or baselines=false)")  # fmt: skip
        require(self.challenger != self.champion, self, "champion", "must differ from the challenger alias")
        return self


def _check_local_output(owner: GenerateConfig | ImputeConfig) -> None:
    """`output` is a local file, not a directory: it is published by a rename, after all the work."""
    require("://" not in owner.output, owner, "output",
            f"the file is published by a rename: use a local path, got {owner.output!r}")  # fmt: skip
    require(not Path(resolve_path(owner.output)).is_dir(), owner, "output",
            f"{resolve_path(owner.output)} is a directory; name the file to write")  # fmt: skip


@config_class
class GenerateConfig:
    """Synthetic rows from a registered model: z ~ N(0, I), decoded into the training columns."""

    model: ModelSpec = "vae-anomaly@champion"
    n: PositiveInt = 1000
    output: ParquetFile = "outputs/generated.parquet"
    mode: Literal[tuple(GENERATION_MODES)] = "sample"  # a draw of p(x|z), or its mean (most probable category / bit)
    seed: Count = 0
    condition: dict[str, Any] = field(default_factory=dict)  # conditional models: condition column -> value
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    @model_validator(mode="after")
    def _output_is_local(self) -> GenerateConfig:
        _check_local_output(self)
        return self


@config_class
class ImputeConfig:
    """Missing feature values of Parquet rows filled by a registered model (Markov chains given the observed)."""

    input: str  # Parquet file, directory or URI
    output: ParquetFile = "outputs/imputed.parquet"
    model: ModelSpec = "vae-anomaly@champion"
    method: Literal[IMPUTATION_METHODS] = "metropolis"
    iterations: PositiveInt = 50  # steps of each chain; the second half is averaged into the estimate
    samples: PositiveInt = 8  # independent chains per row
    return_samples: Flag = False  # write each chain's last draw (`imputation` = 0..samples-1), not the estimate
    seed: Count = 0
    batch_size: PositiveInt = 1024  # rows imputed at once (each with `samples` chains)
    truth: Text | None = None  # the same rows complete: prints the imputation RMSE of the model and of the mean
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    @model_validator(mode="after")
    def _paths_are_set(self) -> ImputeConfig:
        require(bool(self.input), self, "input", "set the Parquet file, directory or URI")
        _check_local_output(self)
        return self


@config_class
class ServeConfig:
    """The online scoring endpoint (Ray Serve): which model answers `POST /score` where, on how many replicas."""

    model: ModelSpec = "vae-anomaly@champion"  # NAME@ALIAS is followed: each replica swaps in the version it moves to
    host: Text = "127.0.0.1"  # 0.0.0.0 to listen on every interface
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 8000
    replicas: PositiveInt = 1
    cpus_per_replica: Positive = 1.0
    max_batch_size: PositiveInt = 16  # requests a replica scores in one model call (@serve.batch)
    batch_wait_ms: NonNegative = 2.0  # how long a replica waits to fill a batch
    max_rows: PositiveInt = 10_000  # rows one request may carry
    alias_poll_s: Positive = 10.0  # how often each replica asks the registry where the alias points
    top_features: Count = 3
    unknown_categories: Literal["score", "quarantine"] = "score"  # score them in the unknown bucket, or set aside
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray
    local_cpus: PositiveInt = 2
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
