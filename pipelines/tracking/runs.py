"""Tracked MLflow runs: opened (or resumed by name), their params, metrics, figures and text, and the model a
training run logs and registers (`pipelines.tracking.registry` finds and loads registered models).

The tracking URI is always explicit (config, else MLFLOW_TRACKING_URI, else a SQLite store under
`<project>/mlruns/`), and it travels to Ray workers as a value, never through a worker's cwd.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import mlflow
import pandas as pd
import pyarrow as pa
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

import vae
from pipelines.settings.yaml_configs import PROJECT_DIR, TrackingSettings
from vae import Detector, ImagePreprocessor, save_detector
from vae.columns import plain_arrow_type

from .scoped_env import quiet_mlflow_info, scoped_tracking_uri

if TYPE_CHECKING:  # matplotlib is imported by the plots; Ray Train's controller logs epochs without it
    from matplotlib.figure import Figure

LOCAL_STORE = PROJECT_DIR / "mlruns"
RUN_NAME_TAG = "vae.run_name"
REGISTERED_TAG = "vae.registered_version"  # on a run: NAME/VERSION of the model it registered last
PARENT_TAG = "mlflow.parentRunId"  # MLflow nests a run under the run this tag names
MODEL_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"  # the "model from code" file MLflow copies
VAE_PACKAGE = Path(vae.__file__).resolve().parent  # the library the pyfunc imports, logged with it


class TrackingError(RuntimeError):
    """MLflow is unreachable or refused a request; the message says which and where."""


def resolve_tracking_uri(settings: TrackingSettings) -> str:
    """The config's URI, else MLFLOW_TRACKING_URI, else the project's local SQLite store."""
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    LOCAL_STORE.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{LOCAL_STORE / 'mlflow.db'}"


def _local_artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live in `artifacts/` beside its database file (MLflow's default
    would be `./mlruns` in whatever cwd a process has)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"section.key": "value"} for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """All `metrics` at one step, in a single request."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


class EpochLogger:
    """Logs one epoch's metrics to a run in a single request (for Ray Train's controller, `EpochReports`), each
    epoch once: the epochs an earlier attempt of the run already logged (those with a point of `marker`, a metric
    every epoch logs) are not logged again, whatever the number of restarts (a run resumed by name after a crash
    of its driver trains again the epochs after its last stored checkpoint)."""

    def __init__(self, tracking_uri: str, run_id: str, marker: str = "val_loss") -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id, self.marker = run_id, marker
        self.logged_before = {m.step for m in self.client.get_metric_history(run_id, marker)}

    def log(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.marker in metrics and epoch in self.logged_before:
            return
        _log_metrics(self.client, self.run_id, metrics, epoch)

    def run_is_open(self) -> bool:
        """Whether the run is still RUNNING, asked of MLflow (a sweep closes a trial's run when Tune stops it)."""
        return self.client.get_run(self.run_id).info.status == "RUNNING"


@dataclass
class RegisteredModel:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME/VERSION


class Tracker:
    """A training run's MLflow side: found again by run name, so a resumed run keeps logging to it."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.uri = resolve_tracking_uri(settings)
        self.client = MlflowClient(self.uri)
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        try:
            experiment = self.client.get_experiment_by_name(self.settings.experiment)
            if experiment is not None:
                return experiment.experiment_id
            return self.client.create_experiment(self.settings.experiment, _local_artifact_root(self.uri))
        except MlflowException as err:
            raise TrackingError(f"MLflow at {self.uri} refused the experiment: {err.message.splitlines()[0]}") from err
        except Exception as err:  # connection errors surface as several exception types
            raise TrackingError(f"MLflow at {self.uri} is unreachable: {str(err).splitlines()[0]}") from err

    def start(
        self, run_name: str, params: Mapping[str, str], resume: bool = True, parent_run_id: str | None = None
    ) -> tuple[str, bool]:
        """Open the run named `run_name` (with `resume`, an existing one of that name); returns (run_id, resumed).

        Params already on a resumed run keep their first value; new ones are added. With `parent_run_id` the
        run is created as that run's child (a sweep's trial).
        """
        found = self.find_run(run_name) if resume else None
        if found is not None:
            run = found
            self.client.update_run(run.info.run_id, status="RUNNING")
        else:
            tags = {RUN_NAME_TAG: run_name} | ({PARENT_TAG: parent_run_id} if parent_run_id else {})
            run = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self._log_new_params(params, run.data.params)
        return self.run_id, found is not None

    def find_run(self, run_name: str) -> Run | None:
        """The latest run of this experiment named `run_name`, or None."""
        found = self.client.search_runs(
            [self._experiment_id()], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1,
            order_by=["attributes.start_time DESC"],
        )  # fmt: skip
        return found[0] if found else None

    def registered_by(self, run: Run) -> tuple[RegisteredModel, dict[str, str]] | None:
        """The model version `run` registered last (REGISTERED_TAG) and that version's tags, or None."""
        if REGISTERED_TAG not in run.data.tags:
            return None
        name, version = run.data.tags[REGISTERED_TAG].rsplit("/", 1)
        tags = self.client.get_model_version(name, version).tags
        return RegisteredModel(name, version, self.settings.alias, f"models:/{name}/{version}"), tags

    def log_params(self, params: Mapping[str, str]) -> None:
        """Add `params` to the open run; those it already has keep their first value (a resumed run)."""
        if params:
            self._log_new_params(params, self.client.get_run(self.run_id).data.params)

    def _log_new_params(self, params: Mapping[str, str], logged: Mapping[str, str]) -> None:
        items = [Param(k, v[:6000]) for k, v in params.items() if k not in logged]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def end(self, ok: bool) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def child_runs(self) -> dict[str, Run]:
        """This run's children (a sweep's trials) by run name."""
        found = self.client.search_runs(
            [self._experiment_id()], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'", max_results=10_000
        )
        return {run.data.tags.get(RUN_NAME_TAG, run.info.run_name): run for run in found}

    def close_run(self, run_id: str, ok: bool, tags: Mapping[str, Any]) -> None:
        """Tag and terminate another run of this experiment (a trial that Tune stopped or lost)."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def read_csv_artifact(self, run_id: str, path: str) -> pd.DataFrame:
        """A CSV file logged with run `run_id` (e.g. by `log_text`), as a frame."""
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(self.client.download_artifacts(run_id, path, tmp))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        _log_metrics(self.client, self.run_id, metrics, step or 0)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tag the open run, all tags in one request."""
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def metric_history(self, names: list[str]) -> dict[str, list[tuple[int, float]]]:
        """name -> [(step, value)], the last value per step (a resumed epoch replaces its first try)."""
        history = {}
        for name in names:
            latest: dict[int, tuple[int, float]] = {}
            for m in self.client.get_metric_history(self.run_id, name):
                if m.step not in latest or m.timestamp >= latest[m.step][0]:
                    latest[m.step] = (m.timestamp, m.value)
            history[name] = sorted((step, value) for step, (_, value) in latest.items())
        return history

    def log_figure(self, figure: Figure, path: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, path)
        plt.close(figure)

    @contextlib.contextmanager
    def _active_run(self) -> Iterator[None]:
        """MLflow's model logging works on the fluent API's active run: scope it to this block."""
        with scoped_tracking_uri(self.uri), mlflow.start_run(run_id=self.run_id):
            yield

    def log_and_register(
        self,
        detector: Detector,
        signature: ModelSignature,
        tags: Mapping[str, Any],
        input_example: pd.DataFrame | None = None,
    ) -> RegisteredModel:
        """Log the detector as a pyfunc model (its code, the `vae` package and plain-file artifacts; `input_example`:
        a few raw input rows, which MLflow stores and checks the model against), register a version, set the
        alias."""
        name, alias = self.settings.model_name, self.settings.alias
        with tempfile.TemporaryDirectory() as tmp, self._active_run(), quiet_mlflow_info():
            directory = save_detector(detector, Path(tmp) / "detector")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={"detector": str(directory)},
                signature=signature,
                pip_requirements=_requirements(),
                code_paths=[str(VAE_PACKAGE)],
                input_example=input_example,
            )
            # The client, not `mlflow.register_model`, which prints "Successfully registered model" and "Created
            # version"; inside the block, which points MLflow's default store at this run's to resolve the source.
            try:
                self.client.create_registered_model(name)
            except MlflowException as err:
                if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            version = self.client.create_model_version(name, info.model_uri, run_id=self.run_id,
                                                       model_id=info.model_id,
                                                       tags={k: str(v) for k, v in tags.items()})  # fmt: skip
        self.client.set_registered_model_alias(name, alias, version.version)
        self.client.set_tag(self.run_id, REGISTERED_TAG, f"{name}/{version.version}")
        return RegisteredModel(name, version.version, alias, f"models:/{name}/{version.version}")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point `NAME@ALIAS` at `version` (moving it from any other version)."""
        self.client.set_registered_model_alias(name, alias, version)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))


class OpenRun(NamedTuple):
    run_id: str
    resumed: bool  # an earlier run of the same name was found and goes on


@contextlib.contextmanager
def tracked_run(
    tracker: Tracker, run_name: str, params: Mapping[str, str], *, resume: bool = True, parent_run_id: str | None = None
) -> Iterator[OpenRun]:
    """A run's lifecycle as one block: `tracker.start(run_name, params, ...)` before it, then the run ends FINISHED
    when the block completes and FAILED when it raises (the exception goes on). A run that fails to open is not
    ended: there is none.

    A tracking server that fails inside the block (an MLflow or HTTP error) ends it with one TrackingError line, not
    MLflow's traceback; when the block already failed, a failure to end the run leaves the block's error standing."""
    run_id, resumed = tracker.start(run_name, params, resume=resume, parent_run_id=parent_run_id)
    ok = False
    try:
        yield OpenRun(run_id, resumed)
        ok = True
    except TRACKING_FAILURES as err:
        raise TrackingError(f"MLflow at {tracker.uri} failed during run {run_name!r}: {_first_line(err)}") from err
    finally:
        try:
            tracker.end(ok)
        except TRACKING_FAILURES as err:
            if ok:
                message = f"MLflow at {tracker.uri} could not end run {run_name!r}: {_first_line(err)}"
                raise TrackingError(message) from err


TRACKING_FAILURES = (MlflowException, requests.exceptions.RequestException)


def _first_line(err: Exception) -> str:
    text = err.message if isinstance(err, MlflowException) else str(err)
    return (text.strip().splitlines() or [type(err).__name__])[0]


MODEL_PACKAGES = ("torch", "numpy", "pandas", "pydantic", "pillow", "mlflow")  # what `vae` and the pyfunc import


def _requirements() -> list[str]:
    """The logged model's pip requirements, pinned to the releases installed here; a local build label (the CPU
    wheel's `2.13.0+cpu`) names no file on a package index, so the release alone is pinned. `vae` itself is on
    no index: it travels with the model (`code_paths`)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in MODEL_PACKAGES]


def signature_type(kind: pa.DataType) -> str:
    """The MLflow signature type of a raw input column of Arrow type `kind`, which MLflow's schema check accepts
    that column's values for: boolean; long for any integer; double for floating and decimal; string otherwise
    (a dictionary as its values' type: `plain_arrow_type`)."""
    kind = plain_arrow_type(kind)
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "long"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "double"
    return "string"


def input_signature(
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
    image: ImagePreprocessor | None = None,
    types: Mapping[str, pa.DataType] | None = None,
) -> ModelSignature:
    """Raw input columns (typed by `signature_type` of their Arrow type in `types`; else numeric as double,
    categorical as string; an image column as an array of doubles or PNG bytes) -> anomaly_score, is_anomaly."""
    types = types or {}
    inputs = [ColSpec(signature_type(types[c]) if c in types else "double", c) for c in numeric]
    inputs += [ColSpec(signature_type(types[c]) if c in types else "string", c) for c in categorical]
    if image is not None:
        kind = DataType.binary if image.encoding == "png" else Array(DataType.double)
        inputs.append(ColSpec(kind, image.column))
    outputs = [ColSpec("double", "anomaly_score"), ColSpec("boolean", "is_anomaly")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(table: pa.Table, rows: int) -> pd.DataFrame | None:
    """The first `rows` complete rows of raw input `table` as `input_signature` types them (dictionaries decoded,
    decimals as float64: `plain_arrow_type`), for the logged model's input example; None when no row is complete."""
    plain = pa.schema([field.with_type(plain_arrow_type(field.type)) for field in table.schema])
    complete = table.cast(plain).drop_null()  # before pandas, which would turn null integers into NaN floats
    return complete.slice(0, rows).to_pandas() if complete.num_rows else None
