"""Pipeline configuration: YAML files plus `key.sub=value` overrides, validated before Ray starts.

Hyperparameters (model, objective, train, score) reuse the library's config classes (pydantic dataclasses, see
`vae.config`); where the run happens (`scaling`, `run`, `tracking`) has its own sections. An impossible value or
an unknown key fails with one line naming the dotted field (`ConfigError`). The same classes give the JSON
Schemas in `configs/schema/` (`python -m pipelines config-schema`) that editors read. Addresses are never
required in a file: Ray reads `RAY_ADDRESS` and MLflow `MLFLOW_TRACKING_URI` when the config leaves them unset.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from vae import ImagePreprocessor, ModelConfig, ObjectiveConfig, ScoreConfig, TrainConfig
from vae.config import auto_fields, check_variant
from vae.config_base import (
    AUTO,
    ConfigError,
    Count,
    Flag,
    Fraction,
    NonNegative,
    Positive,
    PositiveInt,
    Shape,
    Text,
    config_class,
    from_dict,
    number,
    require,
    to_dict,
)
from vae.images import IMAGE_ENCODINGS, IMAGE_LIKELIHOODS
from vae.preprocessing import MISSING_POLICIES

from .dotted_yaml import apply_overrides, read_yaml, set_dotted
from .search_space import SPACE_SCHEMA, parse_space

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
AUTO_SECTIONS = ("model", "train", "score")  # the sections whose fields may be "auto" (see vae.config.AUTO_FIELDS)

# a run's folder under run.storage_path ("." or ".." would put it at the root or one folder above); the regex has
# no look-ahead (pydantic's engine), so it spells out: a first character that is not a dot, or one or two dots first
_FOLDER = r"^([^/\\.][^/\\]*|\.[^/\\.][^/\\]*|\.\.[^/\\]+)$"
Name = Annotated[str, Field(pattern=_FOLDER, description="a folder name (no '/' or '\\', not '.' or '..')")]
Retries = Annotated[int, Field(strict=True, ge=-1)]  # -1: retry forever
# a sweep's combinations of values (grids crossed, ranges' ends) validated before Ray starts, when there are no more
CHECKED_TRIALS = 1000


def _alias(value: str) -> str:
    if value == "latest" or re.fullmatch(r"v\d+", value):
        raise ValueError("'latest' and v<digits> name versions in MLflow, not aliases")
    return value


# Registry names MLflow takes and `NAME@ALIAS` / `NAME/VERSION` can name, checked before training (MLflow refused
# them only at registration, after it)
ModelName = Annotated[str, Field(pattern=r"^[^/:@]+$", description="a registered model name (no '/', ':' or '@')")]
Alias = Annotated[
    str,
    Field(pattern=r"^[\w-]+$", description="letters, digits, '_' and '-'; not 'latest' or v<digits>"),
    AfterValidator(_alias),
]
Factor = number(gt=1)


@config_class
class ImageColumn:
    """An image per row in `column`: C*H*W numbers (`array`: a list, fixed-size list or nested lists) or PNG
    bytes (`png`). Pixels are divided by `scale` (their largest possible value) to lie in [0, 1]."""

    column: str
    shape: Shape  # (C, H, W)
    encoding: Literal[IMAGE_ENCODINGS] = "array"
    scale: Positive = 255.0
    likelihood: Literal[IMAGE_LIKELIHOODS] = "bernoulli"  # that of each pixel intensity in [0, 1]

    @model_validator(mode="after")
    def _column_is_named(self) -> ImageColumn:
        require(bool(self.column), self, "column", "name the column holding the images")
        return self

    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.column, self.shape, self.encoding, self.scale, self.likelihood)


@config_class
class DataConfig:
    """Where the rows are and what their columns mean. `path` is a Parquet file, a directory or a URI.

    With no feature columns declared (numeric, binary and categorical all empty) and no image, the features are
    every column that is not a key, the label, a condition or excluded, typed from the Parquet schema when the
    run starts (`pipelines.runtime.feature_kinds`).
    """

    path: str
    numeric: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # columns that are never features (only read when the features are inferred)
    condition_numeric: tuple[str, ...] = ()  # CVAE condition columns
    condition_categorical: tuple[str, ...] = ()
    key: tuple[str, ...] = ()  # row identifiers, carried to outputs; also the split key when given
    label: str | None = None  # 1 = anomaly; evaluation only, never a model input
    validation_fraction: Fraction = 0.1
    split_seed: Count = 0
    missing: Literal[MISSING_POLICIES] = "impute"
    materialize: Flag = True  # keep encoded rows in Ray's object store across epochs (off: stream each epoch)
    image: ImageColumn | None = None  # image rows: the image column is then the only model input

    @model_validator(mode="after")
    def _path_and_column_roles(self) -> DataConfig:
        require(bool(self.path), self, "path", "set the Parquet file, directory or URI")
        if self.image is not None:
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
        return self

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


@config_class
class ScalingSettings:
    """Ray Train workers. On a laptop each worker is a process; on a cluster, usually one per GPU."""

    num_workers: PositiveInt = 2
    use_gpu: Flag = False
    cpus_per_worker: Positive = 1.0
    gpus_per_worker: Positive = 1.0  # used only with use_gpu
    # After its first pass a worker keeps its shard of each split in memory (on its device) when the shard fits in
    # this many MiB, so later epochs index tensors instead of streaming from Ray Data; 0: stream every epoch.
    shard_memory_mb: NonNegative = 1024.0

    def resources_per_worker(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources

    def group_resources(self) -> tuple[float, float]:
        """(CPUs, GPUs) the whole worker group holds."""
        return self.num_workers * self.cpus_per_worker, self.num_workers * self.gpus_per_worker * self.use_gpu


@config_class
class RunSettings:
    """Identity and fault tolerance of a run. The same `name` and `storage_path` resume the run."""

    name: Name = "vae"
    storage_path: Text = "runs"  # relative paths resolve against the project directory; or a URI
    max_failures: Retries = 2  # worker-group restarts from the last checkpoint
    checkpoints_to_keep: PositiveInt = 2  # the best by validation loss (the latest is always kept too)
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray started for the run
    local_cpus: PositiveInt = 4  # logical CPUs of a local Ray: more than workers use, so Ray Data can read
    resume_changed: Flag = False  # let an existing `name` resume with another config (not another architecture)

    def resolved_storage_path(self) -> str:
        """An absolute path or a URI (Ray Train needs one or the other)."""
        return resolve_path(self.storage_path)


@config_class
class TrackingSettings:
    """MLflow: where runs go and what the trained model is registered as."""

    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else a SQLite store under mlruns/
    experiment: Text = "vae-anomaly"
    model_name: ModelName = "vae-anomaly"
    alias: Alias = "challenger"


@config_class
class TrainPipelineConfig:
    """A training run: the data, the library's hyperparameters, and where and how the run happens."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    @model_validator(mode="after")
    def _variant_suits_the_data(self) -> TrainPipelineConfig:
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
        return self

    @property
    def auto_fields(self) -> tuple[str, ...]:
        """The hyperparameters set to "auto" (left to `vae.auto.resolve`) as dotted names: ("model.latent_dim", ...)."""
        return tuple(f"{section}.{name}" for section in AUTO_SECTIONS for name in auto_fields(getattr(self, section)))


@config_class
class AshaSettings:
    """ASHA early stopping of trials on the selection metric, one rung step per epoch."""

    enabled: Flag = True
    grace_period: PositiveInt = 2  # epochs every trial runs before it may be stopped
    reduction_factor: Factor = 2.0  # at each rung, the best 1/reduction_factor of trials go on


SELECTION_METRICS = {"nll": ("val_nll", "min"), "auroc": ("val_auroc", "max")}


@config_class
class TuneSettings:
    """A Ray Tune sweep: each trial is a full Ray Train run of the config with the trial's values swept in.

    The same `name` (and `run.storage_path`) resumes the sweep, and finds its MLflow parent run again.
    """

    name: Name = "vae-sweep"
    space: Annotated[dict[str, Any], WithJsonSchema(SPACE_SCHEMA)] = field(default_factory=dict)  # search_space.py
    metric: Literal[tuple(SELECTION_METRICS)] = "nll"  # validation NLL, or AUROC of the score against `data.label`
    search: Literal["optuna", "grid"] = "optuna"  # seeded Optuna (TPE), or grid axes crossed (+ random draws)
    num_samples: PositiveInt = 8  # optuna: trials; grid: repeats of the whole grid
    max_concurrent_trials: PositiveInt | None = None  # default: what the cluster's CPUs (GPUs) hold at its most
    seed: Count = 0
    nll_samples: PositiveInt = 32  # importance samples per validation row for val_nll
    selection_rows: PositiveInt = 20_000  # validation rows val_nll / val_auroc are computed on (each epoch)
    # metric nll: the trial with the config's own values (the default) is kept unless another trial's per-row
    # validation NLL, on validation rows that repeat no training row, is lower by a one-sided Wilcoxon signed-rank
    # test at this level (vae.selection); null: the lowest mean val_nll wins
    significance: Fraction | None = 0.05
    max_failures: Retries = 1  # restarts of a failed trial (from its last checkpoint)
    asha: AshaSettings = field(default_factory=AshaSettings)

    @model_validator(mode="after")
    def _space_suits_the_search(self) -> TuneSettings:
        for axis in parse_space(self.space):
            if self.search == "optuna" and axis.kind == "grid":
                raise ConfigError(f"tune.space.{axis.name}: grid axes need tune.search=grid; Optuna samples: "
                                  f"use choice")  # fmt: skip
            if self.search == "optuna" and axis.kind == "choice":
                scalar = all(v is None or isinstance(v, (bool, int, float, str)) for v in axis.values)
                require(scalar, self, f"space.{axis.name}", "Optuna chooses among scalars only; use tune.search=grid")
        return self

    @property
    def reported_metric(self) -> tuple[str, str]:
        """(metric name as the trials report it, "min" or "max")."""
        return SELECTION_METRICS[self.metric]


@config_class
class TunePipelineConfig(TrainPipelineConfig):
    """A training config plus the sweep over it; every value a trial can get is checked up front."""

    tune: TuneSettings = field(default_factory=TuneSettings)

    @model_validator(mode="after")
    def _every_trial_is_valid(self) -> TunePipelineConfig:
        if self.tune.metric == "auroc":
            require(bool(self.data.label), self.data, "label", "tune.metric=auroc needs the label column")
        base = self.train_dict()
        axes = parse_space(self.tune.space)
        budget = {"train.epochs"} | ({"train.batch_size"} if self.train.epochs == AUTO else set())
        swept = sorted(budget & {axis.name for axis in axes})
        require(not (self.tune.asha.enabled and swept), self.tune, "asha",
                f"ASHA stops every trial at the base config's epochs, so a sweep of {swept} (which sets a trial's "
                "epochs) would cut trials short and call them completed; sweep it without ASHA")  # fmt: skip
        for axis in axes:
            for value in axis.candidates():
                try:
                    from_dict(TrainPipelineConfig, set_dotted(base, axis.name, value))
                except ConfigError as err:
                    why = str(err)
                    if why.startswith(f"{axis.name}: "):  # the value's own problem: the line already names the value
                        why = why.removeprefix(f"{axis.name}: ").removesuffix(f", got {value!r}")
                    raise ConfigError(f"tune.space.{axis.name}: value {value!r} is invalid: {why}") from err
        trials = list(itertools.product(*(axis.candidates() for axis in axes)))
        for values in trials if len(axes) > 1 and len(trials) <= CHECKED_TRIALS else ():  # values valid together
            data = base
            for axis, value in zip(axes, values, strict=True):
                data = set_dotted(data, axis.name, value)
            try:
                from_dict(TrainPipelineConfig, data)
            except ConfigError as err:
                trial = ", ".join(f"{axis.name}={value!r}" for axis, value in zip(axes, values, strict=True))
                raise ConfigError(f"tune.space: the trial {trial} is invalid: {err}") from err
        return self

    def train_dict(self) -> dict[str, Any]:
        """The training config (without `tune`) as a plain mapping."""
        data = to_dict(self)
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


def load_config(path: str | Path, overrides: list[str] = (), cls: type = TrainPipelineConfig) -> Any:
    """Read a YAML config, apply overrides and validate everything; raises ConfigError naming the field."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (PROJECT_DIR / path).is_file():
        path = PROJECT_DIR / path  # `ray submit` runs scripts from the home directory, not the project's
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = read_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".splitlines()[0]) from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got a {type(data).__name__}")
    return from_dict(cls, apply_overrides(data, list(overrides)))
