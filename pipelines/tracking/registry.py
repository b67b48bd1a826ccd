"""The MLflow model registry: which version `NAME@ALIAS` or `NAME/VERSION` names, and the Detector a registered
model holds, loaded as MLflow serves it (downloaded one file per request, with a tracking URI scoped to the load)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.settings.model_jobs import MODEL_SPEC
from pipelines.settings.yaml_configs import TrackingSettings
from vae import Detector

from .runs import TrackingError, resolve_tracking_uri
from .scoped_env import scoped_tracking_uri, whole_file_downloads


class ModelNotFoundError(TrackingError):
    """The registry has no such model, alias or version."""


def resolve_model_version(name: str, alias: str | None, version: str | None, tracking_uri: str) -> str:
    """The version number that `NAME@ALIAS` points to now (or `NAME/VERSION`, checked to exist)."""
    client = MlflowClient(tracking_uri)
    spec = f"{name}@{alias}" if alias else f"{name}/{version}"
    try:
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        first_line = err.message.splitlines()[0]
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelNotFoundError(f"model {spec} not found in {tracking_uri}: {first_line}") from err
        raise TrackingError(f"MLflow at {tracking_uri} did not answer: {first_line[:300]}") from err
    except Exception as err:  # connection errors surface as several exception types
        raise TrackingError(f"MLflow at {tracking_uri} is unreachable: {str(err).splitlines()[0]}") from err
    return str(found.version)


def version_by_alias(name: str, alias: str, tracking_uri: str) -> str | None:
    """The version `NAME@ALIAS` points to, or None when the model or the alias does not exist."""
    try:
        return resolve_model_version(name, alias, None, tracking_uri)
    except ModelNotFoundError:
        return None


@contextlib.contextmanager
def _sys_path_restored() -> Iterator[None]:
    """`sys.path` as it was after the block: loading a model prepends its (temporary) code folder for good."""
    previous = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = previous


def load_registered_detector(model_uri: str, tracking_uri: str | None = None) -> Detector:
    """The Detector inside a registered model (`models:/NAME@ALIAS` or `models:/NAME/VERSION`), loaded through
    `mlflow.pyfunc.load_model` (the model's own `pyfunc_model.py`), so a job scores with what `mlflow models serve`
    serves."""
    uri = tracking_uri or resolve_tracking_uri(TrackingSettings())
    with tempfile.TemporaryDirectory() as tmp, scoped_tracking_uri(uri), whole_file_downloads(), _sys_path_restored():
        try:
            model = mlflow.pyfunc.load_model(model_uri, dst_path=tmp)
        except MlflowException as err:
            raise TrackingError(f"cannot load {model_uri} from {uri}: {err.message.splitlines()[0]}") from err
        return model.unwrap_python_model().detector


def load_model_spec(spec: str, tracking_uri: str) -> tuple[Detector, str]:
    """The Detector that `NAME@ALIAS` (resolved now) or `NAME/VERSION` names, and that `NAME/VERSION`."""
    found = MODEL_SPEC.match(spec)
    if not found:
        raise ModelNotFoundError(f"model {spec!r} is not NAME@ALIAS or NAME/VERSION")
    version = resolve_model_version(found["name"], found["alias"], found["version"], tracking_uri)
    pinned = f"{found['name']}/{version}"
    return load_registered_detector(f"models:/{pinned}", tracking_uri), pinned
