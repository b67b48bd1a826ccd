"""`python -m pipelines train --config pipelines/configs/train.yaml key.sub=value ...`

The recipe: validate config and data -> start (or join) Ray -> type the feature columns (when inferred), split and
fit preprocessing with Ray Data -> choose the "auto" hyperparameters for the training rows -> Ray Train DDP ->
calibrate the threshold on validation scores -> log plots, the model and its version to MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from pipelines.cli import run_config_command
from pipelines.runtime.cluster import ray_session, require_local_resources
from pipelines.runtime.distributed_run import build_trainer, fit, load_checkpoint_detector, loop_spec
from pipelines.runtime.parquet_checks import open_merged
from pipelines.runtime.parquet_input import PreparedData, check_training_data, declare_features, prepare_data
from pipelines.runtime.shared_storage import require_shared
from pipelines.runtime.validation_pass import score_sample
from pipelines.runtime.worker_loop import CHECKPOINT_SCORE
from pipelines.settings.yaml_configs import TrainPipelineConfig
from pipelines.storage import filesystems
from pipelines.storage.arrow_types import SCHEMA_KEY, recorded_schema
from pipelines.tracking import plots
from pipelines.tracking.image_figures import GRID_COLUMNS, image_figures
from pipelines.tracking.monitoring import reference_statistics
from pipelines.tracking.run_identity import CHOSEN_PARAM, CONFIG_HASH_TAG, ChangedResume, allowed_changes, config_hash
from pipelines.tracking.runs import RegisteredModel, Tracker, flatten, input_example, input_signature, tracked_run
from vae import Detector, to_dict
from vae.auto import resolve

LATENT_SAMPLE = 2_000  # validation rows shown in the latent-space plot
INPUT_EXAMPLE_ROWS = 5  # the first complete rows of the input, stored with the logged model as its input example
EXAMPLE_SCAN_ROWS = 1000  # the rows they are looked for in
LOSS_METRICS = ["train_loss", "val_loss"]
Config = TypeVar("Config", bound=TrainPipelineConfig)


@dataclass
class TrainOutcome:
    registered: RegisteredModel
    tracking_uri: str
    run_id: str
    threshold: float
    best_val_loss: float
    last_epoch: int


def run(config: TrainPipelineConfig) -> TrainOutcome:
    """Train, calibrate, log and register; raises DataError / ConfigError / TrackingError on bad input."""
    data = config.data
    rows = check_training_data(data)
    cpus, gpus = config.scaling.group_resources()
    require_local_resources(config.run.ray_address, config.run.local_cpus, cpus, gpus, "the worker group")
    filesystems.check_writable(config.run.resolved_storage_path())
    tracker = Tracker(config.tracking)
    later = chosen_from_data(config)  # logged once the data has decided them
    params = {k: v for k, v in flatten(to_dict(config)).items() if k not in later}
    done, changes = check_resume(config, tracker, params)
    if done is not None:
        return done
    with ray_session(config.run.ray_address, config.run.local_cpus):
        require_shared(config.run.storage_path, "run.storage_path")
        with tracked_run(tracker, config.run.name, params) as tracked:
            print(f"{'resuming' if tracked.resumed else 'starting'} run {config.run.name!r}: {rows} rows from "
                  f"{data.path}; MLflow {tracker.uri} (run {tracked.run_id})", flush=True)  # fmt: skip
            record_changes(tracker, changes)
            outcome = _train_and_register(config, tracker)
            tracker.set_tags({CONFIG_HASH_TAG: config_hash(params)})
            return outcome


def check_resume(
    config: TrainPipelineConfig, tracker: Tracker, params: dict[str, str]
) -> tuple[TrainOutcome | None, ChangedResume | None]:
    """Before Ray starts, what an existing run of `config.run.name` allows: (its outcome, None) when it already
    registered a model trained with this very config (nothing is trained or registered again); (None, the changes
    `run.resume_changed` lets in, or None) to resume it. A run that exists with another config is refused
    (ConfigError naming the fields, `run_identity.allowed_changes`)."""
    name = config.run.name
    previous = tracker.find_run(name)
    if previous is None:
        return None, None
    done = registered_outcome(tracker, previous, params)
    if done is not None:
        print(f"run {name!r} already trained and registered {done.registered.name}/{done.registered.version} with "
              "this config: nothing to train or register (a new run.name trains a new model)", flush=True)  # fmt: skip
        return done, None
    data = previous.data
    return None, allowed_changes(data.params, data.tags, params, "run.name", name, config.run.resume_changed)


def registered_outcome(tracker: Tracker, previous, params: dict[str, str]) -> TrainOutcome | None:
    """The outcome of `previous` (a run or a sweep's parent run) when it registered a model trained with the config
    `params` hash to (CONFIG_HASH_TAG); None when it registered nothing or had another config."""
    registered = tracker.registered_by(previous)
    if registered is None or previous.data.tags.get(CONFIG_HASH_TAG) != config_hash(params):
        return None
    model, tags = registered
    last_epoch = int(tags.get("last_epoch", previous.data.params.get("train.epochs", 0)))
    return TrainOutcome(model, tracker.uri, previous.info.run_id, float(tags["threshold"]),
                        float(tags["best_val_loss"]), last_epoch)  # fmt: skip


def record_changes(tracker: Tracker, changed: ChangedResume | None) -> None:
    """Say what a `--resume-changed` resume brings in and record it on the open run (run or sweep)."""
    if changed is not None:
        print(changed.message, flush=True)
        tracker.set_tags(changed.tags)


def prepare(config: Config) -> tuple[Config, PreparedData]:
    """`config` with its feature columns declared (`declare_features`), and its rows prepared (`prepare_data`)."""
    config = dataclasses.replace(config, data=declare_features(config.data))
    return config, prepare_data(config.data)


def resolve_auto(config: Config, prepared: PreparedData) -> Config:
    """`config` with its "auto" hyperparameters chosen for the prepared training rows and layout by
    `vae.auto.resolve`, over `scaling.num_workers` DDP workers (`train.batch_size` is rows per worker)."""
    if not config.auto_fields:
        return config
    model, train, score = resolve(config.model, config.train, config.score, prepared.train_rows, prepared.layout,
                                  config.scaling.num_workers)  # fmt: skip
    return dataclasses.replace(config, model=model, train=train, score=score)


def chosen_from_data(config: TrainPipelineConfig) -> tuple[str, ...]:
    """The dotted config keys whose values the training data decides: the "auto" hyperparameters and, when
    the features are inferred, the feature column lists."""
    inferred = ("data.numeric", "data.binary", "data.categorical") if config.data.infers_features else ()
    return (*config.auto_fields, *inferred)


def chosen_params(config: TrainPipelineConfig, keys: tuple[str, ...]) -> dict[str, str]:
    """The MLflow params of `keys` with their values in the (resolved) `config`, and CHOSEN_PARAM listing them."""
    if not keys:
        return {}
    flat = flatten(to_dict(config))
    return {**{key: flat[key] for key in keys}, CHOSEN_PARAM: ",".join(keys)}


def report_auto(config: TrainPipelineConfig, keys: tuple[str, ...]) -> None:
    """Print one line with the values the "auto" hyperparameters `keys` got in the resolved `config`."""
    if keys:
        values = ", ".join(f"{k}={v}" for k, v in chosen_params(config, keys).items() if k in keys)
        print(f"auto hyperparameters ({config.scaling.num_workers} worker(s); batch_size per worker): {values}",
              flush=True)  # fmt: skip


def _train_and_register(config: TrainPipelineConfig, tracker: Tracker) -> TrainOutcome:
    """Prepare, train, register; where the run's time went is logged as the metrics `prepare_s` (checks, Ray Data
    preparation, auto hyperparameters), `train_s` (the Ray Train run: worker group, epochs with their validation,
    checkpoints and logging) and `register_s` (validation scoring, calibration, plots, the model logged and
    registered; `validation_s` of it is the scoring)."""
    started = time.perf_counter()
    later, auto = chosen_from_data(config), config.auto_fields
    config, prepared = prepare(config)
    config = resolve_auto(config, prepared)
    tracker.log_params(chosen_params(config, later))
    report_auto(config, auto)
    trainer = build_trainer(config, prepared, loop_spec(config, prepared), tracker.uri, tracker.run_id)
    prepared_at = time.perf_counter()
    result = fit(trainer)
    trained_at = time.perf_counter()
    print(f"training finished in {trained_at - prepared_at:.1f} s", flush=True)
    if not result.best_checkpoints:
        raise RuntimeError(f"run {config.run.name!r} finished without a checkpoint; see the Ray logs above")
    best, metrics = min(result.best_checkpoints, key=lambda kept: kept[1][CHECKPOINT_SCORE])
    best_val_loss = metrics["val_loss"]
    returned = result.return_value or {}
    last_epoch = returned.get("last_epoch", config.train.epochs)
    detector = load_checkpoint_detector(best, config.score)
    outcome = register(config, tracker, detector, prepared, {"best_val_loss": best_val_loss}, last_epoch)
    tracker.log_metrics({"prepare_s": prepared_at - started, "train_s": trained_at - prepared_at,
                         "register_s": time.perf_counter() - trained_at,
                         **{k: returned[k] for k in ("replica_divergence",) if k in returned}},
                        step=last_epoch)  # fmt: skip
    return outcome


def register(
    config: TrainPipelineConfig,
    tracker: Tracker,
    detector: Detector,
    prepared: PreparedData,
    best: dict[str, float],
    last_epoch: int,
) -> TrainOutcome:
    """Calibrate the threshold and take the drift reference from one random sample of validation rows scored on
    the cluster (`score_sample`: at most 50k rows reach the driver), log plots, then log and register the model
    in `tracker`'s run. `best` holds the chosen checkpoint's metrics (with best_val_loss)."""
    data = config.data
    started = time.perf_counter()
    validation = score_sample(detector, prepared.validation, prepared.validation_rows)
    scoring_s = time.perf_counter() - started
    threshold = detector.calibrate(validation.scores, validation.contributions, validation.observed)
    source = open_merged(data.path)  # the types every file's values fit, as Ray Data read them
    detector.metadata = {
        "run_name": config.run.name,
        "mlflow_run_id": tracker.run_id,
        "key_columns": list(data.key),
        SCHEMA_KEY: recorded_schema(source.schema, (*data.features, *data.conditions)),
        "score_reference": reference_statistics(validation.scores),
    }
    tracker.log_metrics({**best, "threshold": threshold, "val_score_p50": float(np.median(validation.scores)),
                         "validation_s": scoring_s}, step=last_epoch)  # fmt: skip
    tracker.log_figure(plots.loss_curves(tracker.metric_history(LOSS_METRICS)), "plots/loss_curves.png")
    tracker.log_figure(plots.score_histogram(validation.scores, threshold), "plots/validation_scores.png")
    sample = slice(0, LATENT_SAMPLE)
    labels = None if validation.labels is None else validation.labels[sample]
    tracker.log_figure(plots.latent_projection(validation.latent_means[sample], labels), "plots/latent_means.png")
    if data.image:
        batch = prepared.validation.take_batch(GRID_COLUMNS, batch_format="numpy")
        for path, figure in image_figures(detector, batch["x"], batch.get("c")).items():
            tracker.log_figure(figure, path)

    signature = input_signature((*data.numeric, *data.binary, *data.condition_numeric),
                                (*data.categorical, *data.condition_categorical),
                                detector.preprocessor if data.image else None,
                                {field.name: field.type for field in source.schema})  # fmt: skip
    columns = list(signature.inputs.input_names())
    example = None if data.image else input_example(source.head(EXAMPLE_SCAN_ROWS, columns), INPUT_EXAMPLE_ROWS)
    registered = tracker.log_and_register(
        detector,
        signature,
        {"run_name": config.run.name, **best, "threshold": threshold, "last_epoch": last_epoch},
        example,
    )
    return TrainOutcome(registered, tracker.uri, tracker.run_id, threshold, best["best_val_loss"], last_epoch)


def report(outcome: TrainOutcome) -> None:
    r = outcome.registered
    print(f"\nregistered {r.name} version {r.version} with alias @{r.alias}  ({r.model_uri})")
    print(f"best validation loss {outcome.best_val_loss:.4f}; threshold {outcome.threshold:.4f}; "
          f"epochs run {outcome.last_epoch}")  # fmt: skip
    print(f"MLflow: {outcome.tracking_uri}  run {outcome.run_id}  (browse with `make mlflow-ui`)")


def main(argv: list[str] | None = None) -> TrainOutcome:
    return run_config_command("train", __doc__, "train.yaml", "train.epochs=5", TrainPipelineConfig, argv, run, report,
                              resumes=True)  # fmt: skip
