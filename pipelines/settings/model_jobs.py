"""Configs of the jobs that work on a registered model: the scoring job, the champion/challenger evaluation,
generation and imputation. Loaded like every config, with
`pipelines.settings.yaml_configs.load_config(path, overrides, cls)`."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from vae.config import check_choice, check_fraction, check_number, check_positive, require
from vae.imputation import IMPUTATION_METHODS
from vae.likelihoods import GENERATION_MODES
from vae.scoring import SCORES

from .yaml_configs import TrackingSettings

MODEL_SPEC = re.compile(r"^(?P<name>[^@/]+)(@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def check_model_spec(owner: object) -> None:
    """`owner.model` names a registered model as NAME@ALIAS or NAME/VERSION."""
    spec_ok = isinstance(owner.model, str) and MODEL_SPEC.match(owner.model)
    require(bool(spec_ok), owner, "model", f"must be NAME@ALIAS or NAME/VERSION, got {owner.model!r}")


@dataclass(frozen=True)
class ScoreJobConfig:
    """The scheduled scoring job: which model scores which rows into which run-date partition."""

    input: str = ""  # Parquet file, directory or URI; "{run_date}" in it is replaced by the run date
    output: str = "outputs/scores"  # local path or URI; partitions land in <output>/run_date=YYYY-MM-DD/
    model: str = "vae-anomaly@champion"  # NAME@ALIAS or NAME/VERSION in the MLflow registry
    run_date: str = ""  # YYYY-MM-DD; default: today (UTC)
    key: tuple[str, ...] = ()  # id columns copied to the output; default: the model's key columns
    kind: str | None = None  # a name in `vae.scoring.SCORES`; default: the model's score kind
    samples: int | None = None  # posterior samples (k for the NLL); default: the model's
    threshold: float | None = None  # default: the model's calibrated threshold
    top_features: int = 3
    unknown_categories: Literal["score", "quarantine"] = "score"  # score them in the unknown bucket, or set aside
    batch_size: int = 4096
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray
    local_cpus: int = 4
    tracking: TrackingSettings = field(default_factory=lambda: TrackingSettings(experiment="vae-anomaly-scoring"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", tuple(self.key))
        if isinstance(self.run_date, datetime.date):  # YAML reads 2026-01-02 as a date
            object.__setattr__(self, "run_date", self.run_date.isoformat())
        require(isinstance(self.input, str) and self.input, self, "input", "set the Parquet file, directory or URI")
        require(isinstance(self.output, str) and self.output, self, "output", "set the output directory or URI")
        check_model_spec(self)
        if self.run_date:
            try:
                datetime.date.fromisoformat(str(self.run_date))
            except ValueError:
                require(False, self, "run_date", f"must be a date YYYY-MM-DD, got {self.run_date!r}")
        if self.kind is not None:
            check_choice(self, "kind", SCORES)
        if self.samples is not None:
            check_positive(self, "samples", integer=True)
        if self.threshold is not None:
            check_number(self, "threshold", minimum=-float("inf"))
        check_number(self, "top_features", integer=True)
        check_choice(self, "unknown_categories", ("score", "quarantine"))
        check_positive(self, "batch_size", integer=True)
        check_positive(self, "actors", integer=True)
        check_positive(self, "cpus_per_actor")
        check_number(self, "gpus_per_actor")
        check_positive(self, "local_cpus", integer=True)

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


@dataclass(frozen=True)
class EvaluateConfig:
    """Champion/challenger evaluation on labelled rows, and the promotion gate (`evaluate --promote`).

    The registered model is `model_name`; `tracking.model_name` and `tracking.alias` are not used here.
    """

    input: str = ""  # labelled Parquet rows (file, directory or URI)
    train: str = ""  # the rows the model was trained on: the baselines are fitted on them
    label: str = "label"  # 1 = anomaly, 0 = normal
    model_name: str = "vae-anomaly"
    challenger: str = "challenger"  # registry aliases
    champion: str = "champion"
    metric: Literal["auroc", "average_precision"] = "auroc"  # what the promotion gate compares
    margin: float = 0.0  # the challenger must beat the champion's metric by more than this
    seed: int = 0  # posterior samples of the VAE scores and the IsolationForest
    baselines: bool = True  # IsolationForest and PCA reconstruction error, fitted on `train`
    pca_variance: float = 0.5  # share of the training variance the PCA baseline's subspace keeps
    tracking: TrackingSettings = field(default_factory=lambda: TrackingSettings(experiment="vae-anomaly-evaluation"))

    def __post_init__(self) -> None:
        require(isinstance(self.input, str) and self.input, self, "input", "set the labelled Parquet file or directory")
        require(
            not self.baselines or (isinstance(self.train, str) and self.train), self, "train",
            "set the training rows the baselines are fitted on (or baselines=false)",
        )  # fmt: skip
        for name in ("label", "model_name", "challenger", "champion"):
            value = getattr(self, name)
            require(isinstance(value, str) and value, self, name, f"must be a non-empty string, got {value!r}")
        require(self.challenger != self.champion, self, "champion", "must differ from the challenger alias")
        check_choice(self, "metric", ("auroc", "average_precision"))
        check_number(self, "margin")
        check_number(self, "seed", integer=True)
        require(isinstance(self.baselines, bool), self, "baselines", f"must be true or false, got {self.baselines!r}")
        check_fraction(self, "pca_variance")


def _check_model_and_output(owner: object) -> None:
    """`model` is NAME@ALIAS or NAME/VERSION; `output` is a local Parquet file path (published by a rename)."""
    check_model_spec(owner)
    output = owner.output
    require(isinstance(output, str) and output.endswith(".parquet"), owner, "output",
            f"must be a path ending in .parquet, got {output!r}")  # fmt: skip
    require(
        "://" not in output, owner, "output", f"the file is published by a rename: use a local path, got {output!r}"
    )


@dataclass(frozen=True)
class GenerateConfig:
    """Synthetic rows from a registered model: z ~ N(0, I), decoded into the training columns."""

    model: str = "vae-anomaly@champion"  # NAME@ALIAS or NAME/VERSION in the MLflow registry
    n: int = 1000
    output: str = "outputs/generated.parquet"
    mode: str = "sample"  # of GENERATION_MODES: a draw of p(x|z), or its mean (most probable category / bit)
    seed: int = 0
    condition: dict[str, Any] = field(default_factory=dict)  # conditional models: condition column -> value
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self) -> None:
        _check_model_and_output(self)
        check_positive(self, "n", integer=True)
        check_choice(self, "mode", GENERATION_MODES)
        check_number(self, "seed", integer=True)
        require(isinstance(self.condition, dict), self, "condition",
                f"must be a mapping of condition column to value, got {self.condition!r}")  # fmt: skip


@dataclass(frozen=True)
class ImputeConfig:
    """Missing feature values of Parquet rows filled by a registered model (Markov chains given the observed)."""

    input: str = ""  # Parquet file, directory or URI
    output: str = "outputs/imputed.parquet"
    model: str = "vae-anomaly@champion"
    method: str = "metropolis"  # of IMPUTATION_METHODS
    iterations: int = 50  # steps of each chain; the second half is averaged into the estimate
    samples: int = 8  # independent chains per row
    return_samples: bool = False  # write each chain's last draw (`imputation` = 0..samples-1), not the estimate
    seed: int = 0
    batch_size: int = 1024  # rows imputed at once (each with `samples` chains)
    truth: str | None = None  # the same rows complete: prints the imputation RMSE of the model and of the mean
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self) -> None:
        require(isinstance(self.input, str) and self.input, self, "input", "set the Parquet file, directory or URI")
        _check_model_and_output(self)
        check_choice(self, "method", IMPUTATION_METHODS)
        check_positive(self, "iterations", integer=True)
        check_positive(self, "samples", integer=True)
        require(isinstance(self.return_samples, bool), self, "return_samples",
                f"must be true or false, got {self.return_samples!r}")  # fmt: skip
        check_number(self, "seed", integer=True)
        check_positive(self, "batch_size", integer=True)
        require(self.truth is None or (isinstance(self.truth, str) and self.truth), self, "truth",
                "must be a Parquet path or null")  # fmt: skip
