"""Pipeline configuration: YAML files plus `key.sub=value` overrides, validated before Ray starts.

Hyperparameters (model, objective, train, score) reuse the library's dataclasses; where the run happens
(`scaling`, `run`, `tracking`) has its own sections. Addresses are never required in a file: Ray reads
`RAY_ADDRESS` and MLflow `MLFLOW_TRACKING_URI` when the config leaves them unset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vae import ImagePreprocessor, ModelConfig, ObjectiveConfig, ScoreConfig, TrainConfig
from vae.config import (
    ConfigError,
    auto_fields,
    check_choice,
    check_fraction,
    check_number,
    check_positive,
    check_variant,
    from_dict,
    json_ready,
    require,
)
from vae.images import IMAGE_ENCODINGS, IMAGE_LIKELIHOODS
from vae.preprocessing import MISSING_POLICIES

from .search_space import parse_space

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
AUTO_SECTIONS = ("model", "train", "score")  # the sections whose fields may be "auto" (see vae.config.AUTO_FIELDS)


@dataclass(frozen=True)
class ImageColumn:
    """An image per row in `column`: C*H*W numbers (`array`: a list, fixed-size list or nested lists) or PNG
    bytes (`png`). Pixels are divided by `scale` (their largest possible value) to lie in [0, 1]."""

    column: str = ""
    shape: tuple[int, ...] = ()  # (C, H, W)
    encoding: str = "array"  # of IMAGE_ENCODINGS
    scale: float = 255.0
    likelihood: str = "bernoulli"  # of IMAGE_LIKELIHOODS: that of each pixel intensity in [0, 1]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape) if isinstance(self.shape, (list, tuple)) else self.shape)
        require(isinstance(self.column, str) and self.column, self, "column", "name the column holding the images")
        ok_shape = (isinstance(self.shape, tuple) and len(self.shape) == 3
                    and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in self.shape))  # fmt: skip
        require(ok_shape, self, "shape", f"must be three integers [C, H, W] >= 1, got {self.shape!r}")
        check_choice(self, "encoding", IMAGE_ENCODINGS)
        check_positive(self, "scale")
        check_choice(self, "likelihood", IMAGE_LIKELIHOODS)

    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.column, self.shape, self.encoding, self.scale, self.likelihood)


@dataclass(frozen=True)
class DataConfig:
    """Where the rows are and what their columns mean. `path` is a Parquet file, a directory or a URI.

    With no feature columns declared (numeric, binary and categorical all empty) and no image, the features are
    every column that is not a key, the label, a condition or excluded, typed from the Parquet schema when the
    run starts (`pipelines.runtime.feature_kinds`).
    """

    path: str = ""
    numeric: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # columns that are never features (only read when the features are inferred)
    condition_numeric: tuple[str, ...] = ()  # CVAE condition columns
    condition_categorical: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # row identifiers, carried to outputs; also the split key when given
    label: str | None = None  # 1 = anomaly; evaluation only, never a model input
    validation_fraction: float = 0.1
    split_seed: int = 0
    missing: str = "impute"  # of MISSING_POLICIES
    materialize: bool = True  # keep encoded rows in Ray's object store across epochs (off: stream each epoch)
    image: ImageColumn | None = None  # image rows: the image column is then the only model input

    def __post_init__(self) -> None:
        lists = ("numeric", "binary", "categorical", "exclude", "condition_numeric", "condition_categorical", "key")
        for name in lists:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.image, dict):
            object.__setattr__(self, "image", from_dict(ImageColumn, self.image))
        require(isinstance(self.path, str) and self.path, self, "path", "set the Parquet file, directory or URI")
        if self.image is not None:
            require(isinstance(self.image, ImageColumn), self, "image", f"expected a mapping, got {self.image!r}")
            require(
                not self.features,
                self,
                "image",
                f"an image model reads only its image column; remove the feature columns {list(self.features)}",
            )
            require(bool(self.key), self, "key", "image rows are split by their key columns: declare at least one")
        columns = [*self.inputs, *self.not_features]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        require(not repeated, self, "columns", f"each column may have one role only; repeated: {repeated}")
        check_fraction(self, "validation_fraction")
        check_number(self, "split_seed", integer=True)
        check_choice(self, "missing", MISSING_POLICIES)

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.binary, *self.categorical)

    @property
    def infers_features(self) -> bool:
        """True when the feature columns come from the Parquet schema (none declared, no image)."""
        return self.image is None and not self.features

    @property
    def not_features(self) -> tuple[str, ...]:
        """The columns that schema inference leaves out: keys, label, conditions and `exclude`."""
        return (*self.key, *([self.label] if self.label else []), *self.conditions, *self.exclude)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The columns the model encodes: the feature columns, or the image column."""
        return (self.image.column,) if self.image else self.features

    @property
    def conditions(self) -> tuple[str, ...]:
        return (*self.condition_numeric, *self.condition_categorical)

    @property
    def split_key(self) -> tuple[str, ...]:
        """Columns whose hash assigns a row to train or validation: the keys, else the features."""
        return self.key or self.features


@dataclass(frozen=True)
class ScalingSettings:
    """Ray Train workers. On a laptop each worker is a process; on a cluster, usually one per GPU."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # used only with use_gpu

    def __post_init__(self) -> None:
        check_positive(self, "num_workers", integer=True)
        check_positive(self, "cpus_per_worker")
        check_positive(self, "gpus_per_worker")

    def resources_per_worker(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources


@dataclass(frozen=True)
class RunSettings:
    """Identity and fault tolerance of a run. The same `name` and `storage_path` resume the run."""

    name: str = "vae"
    storage_path: str = "runs"  # relative paths resolve against the project directory; or a URI
    max_failures: int = 2  # worker-group restarts from the last checkpoint
    checkpoints_to_keep: int = 2  # the best by validation loss (the latest is always kept too)
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray started for the run
    local_cpus: int = 4  # logical CPUs of a local Ray: more than workers use, so Ray Data can read

    def __post_init__(self) -> None:
        ok_name = isinstance(self.name, str) and self.name and "/" not in self.name
        require(ok_name, self, "name", f"must be a non-empty name without '/', got {self.name!r}")
        check_number(self, "max_failures", minimum=-1, integer=True)  # -1: retry forever
        check_positive(self, "checkpoints_to_keep", integer=True)
        check_positive(self, "local_cpus", integer=True)

    def resolved_storage_path(self) -> str:
        """An absolute path or a URI (Ray Train needs one or the other)."""
        return resolve_path(self.storage_path)


@dataclass(frozen=True)
class TrackingSettings:
    """MLflow: where runs go and what the trained model is registered as."""

    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else a SQLite store under mlruns/
    experiment: str = "vae-anomaly"
    model_name: str = "vae-anomaly"
    alias: str = "challenger"

    def __post_init__(self) -> None:
        for name in ("experiment", "model_name", "alias"):
            value = getattr(self, name)
            require(isinstance(value, str) and value, self, name, f"must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class TrainPipelineConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self) -> None:
        image = self.data.image
        if self.model.network == "conv":
            require(image is not None, self.model, "network", "'conv' needs image rows (data.image); use 'mlp'")
            require(
                image.shape[1] % 4 == 0 and image.shape[2] % 4 == 0,
                self.model,
                "network",
                f"'conv' needs image height and width divisible by 4, data.image.shape is {list(image.shape)}",
            )
        check_variant(self.model, self.objective, self.score)

    @property
    def auto_fields(self) -> tuple[str, ...]:
        """The hyperparameters set to "auto" (left to `vae.auto.resolve`) as dotted names: ("model.latent_dim", ...)."""
        return tuple(f"{section}.{name}" for section in AUTO_SECTIONS for name in auto_fields(getattr(self, section)))


@dataclass(frozen=True)
class AshaSettings:
    """ASHA early stopping of trials on the selection metric, one rung step per epoch."""

    enabled: bool = True
    grace_period: int = 2  # epochs every trial runs before it may be stopped
    reduction_factor: float = 2.0  # at each rung, the best 1/reduction_factor of trials go on

    def __post_init__(self) -> None:
        check_positive(self, "grace_period", integer=True)
        check_number(self, "reduction_factor", minimum=1, strict=True)


SELECTION_METRICS = {"nll": ("val_nll", "min"), "auroc": ("val_auroc", "max")}


@dataclass(frozen=True)
class TuneSettings:
    """A Ray Tune sweep: each trial is a full Ray Train run of the config with the trial's values swept in.

    The same `name` (and `run.storage_path`) resumes the sweep, and finds its MLflow parent run again.
    """

    name: str = "vae-sweep"
    space: dict[str, Any] = field(default_factory=dict)  # see pipelines/settings/search_space.py
    metric: str = "nll"  # of SELECTION_METRICS: validation NLL, or AUROC of the score against `data.label`
    search: Literal["optuna", "grid"] = "optuna"  # seeded Optuna (TPE), or grid axes crossed (+ random draws)
    num_samples: int = 8  # optuna: trials; grid: repeats of the whole grid
    max_concurrent_trials: int | None = None  # default: as many as the cluster's CPUs (GPUs) hold
    seed: int = 0
    nll_samples: int = 32  # importance samples per validation row for val_nll
    max_failures: int = 1  # restarts of a failed trial (from its last checkpoint)
    asha: AshaSettings = field(default_factory=AshaSettings)

    def __post_init__(self) -> None:
        ok_name = isinstance(self.name, str) and self.name and "/" not in self.name
        require(ok_name, self, "name", f"must be a non-empty name without '/', got {self.name!r}")
        check_choice(self, "metric", tuple(SELECTION_METRICS))
        check_choice(self, "search", ("optuna", "grid"))
        check_positive(self, "num_samples", integer=True)
        if self.max_concurrent_trials is not None:
            check_positive(self, "max_concurrent_trials", integer=True)
        check_number(self, "seed", integer=True)
        check_positive(self, "nll_samples", integer=True)
        check_number(self, "max_failures", minimum=-1, integer=True)
        for axis in parse_space(self.space):
            if self.search == "optuna" and axis.kind == "grid":
                raise ConfigError(f"tune.space.{axis.name}: grid axes need tune.search=grid; Optuna samples: "
                                  f"use choice")  # fmt: skip
            if self.search == "optuna" and axis.kind == "choice":
                scalar = all(v is None or isinstance(v, (bool, int, float, str)) for v in axis.values)
                require(scalar, self, f"space.{axis.name}", "Optuna chooses among scalars only; use tune.search=grid")

    @property
    def reported_metric(self) -> tuple[str, str]:
        """(metric name as the trials report it, "min" or "max")."""
        return SELECTION_METRICS[self.metric]


@dataclass(frozen=True)
class TunePipelineConfig(TrainPipelineConfig):
    """A training config plus the sweep over it; every value a trial can get is checked up front."""

    tune: TuneSettings = field(default_factory=TuneSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune.metric == "auroc":
            require(bool(self.data.label), self.data, "label", "tune.metric=auroc needs the label column")
        base = self.train_dict()
        for axis in parse_space(self.tune.space):
            for value in axis.candidates():
                try:
                    from_dict(TrainPipelineConfig, set_dotted(base, axis.name, value))
                except ConfigError as err:
                    raise ConfigError(f"tune.space.{axis.name}: value {value!r} is invalid: {err}") from err

    def train_dict(self) -> dict[str, Any]:
        """The training config (without `tune`) as a plain mapping."""
        data = json_ready(dataclasses.asdict(self))
        data.pop("tune")
        return data

    def trial_config(self, params: dict[str, Any], run_name: str) -> TrainPipelineConfig:
        """The training config of one trial: `params` ({"objective.beta": 0.5, ...}) swept in."""
        data = set_dotted(self.train_dict(), "run.name", run_name)
        for key, value in params.items():
            data = set_dotted(data, key, list(value) if isinstance(value, tuple) else value)
        return from_dict(TrainPipelineConfig, data)


def resolve_path(path: str) -> str:
    """A URI as it is; a relative local path against the project directory (absolute for Ray workers)."""
    if "://" in path:
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else PROJECT_DIR / local)


def _parse_value(raw: str) -> Any:
    """A YAML scalar or list; text YAML cannot read (e.g. the date 2026-02-30) stays text for validation."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError):
        return raw


def set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of the nested mapping `data` with `key` ("section.sub.leaf") set to `value`."""
    data = dict(data)
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[leaf] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `key.sub=value` pairs (values parsed as YAML scalars or lists) into a nested mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        data = set_dotted(data, key, _parse_value(raw))
    return dict(data)


def load_config(path: str | Path, overrides: list[str] = (), cls: type = TrainPipelineConfig) -> Any:
    """Read a YAML config, apply overrides and validate everything; raises ConfigError naming the field."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (PROJECT_DIR / path).is_file():
        path = PROJECT_DIR / path  # `ray submit` runs scripts from the home directory, not the project's
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from err
    return from_dict(cls, apply_overrides(data, list(overrides)))
