"""Settings that only process-wide state holds (environment variables for MLflow and Ray, the fluent API's tracking
URI), each set for one block and restored after it, so nothing a command needed outlives it in the process."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


def verbose() -> bool:
    """Whether Ray's and MLflow's own output is wanted: LOG_LEVEL=DEBUG in the environment (`vae-anomaly --verbose`)."""
    return os.environ.get("LOG_LEVEL", "").upper() == "DEBUG"


@contextlib.contextmanager
def logger_levels(level: int, *names: str | None) -> Iterator[None]:
    """The loggers `names` (None: the root logger) at `level` for one block, each back at its own level after."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)


def quiet_mlflow_info() -> contextlib.AbstractContextManager[None]:
    """MLflow's INFO lines ("Validating input example against model signature") off for one block unless
    `verbose()`; its warnings stay."""
    return contextlib.nullcontext() if verbose() else logger_levels(logging.WARNING, "mlflow")


def environment_defaults(**values: str) -> contextlib.AbstractContextManager[None]:
    """The environment variables `values` for one block, those already set left as they are (a user's own setting
    wins); the ones this block set are removed after it."""
    return environment_values(**{name: value for name, value in values.items() if name not in os.environ})


@contextlib.contextmanager
def environment_values(**values: str) -> Iterator[None]:
    """The environment variables `values` for one block, over any value already set; each restored after it."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def quiet_artifact_transfers() -> contextlib.AbstractContextManager[None]:
    """No progress bar per artifact while MLflow uploads or downloads in this block: one line per download is
    enough (Ray processes started inside inherit the setting)."""
    return environment_defaults(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")


# MLflow's own HTTP defaults retry a request 7 times with a backoff factor of 2, 120 s each: a tracking server
# that dies mid-job kept a scoring job going for 16 minutes. Bounded: 4 attempts about 7 s apart at most, 30 s each.
TRACKING_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}  # fmt: skip


def bounded_tracking_retries() -> contextlib.AbstractContextManager[None]:
    """MLflow requests retried a bounded number of times in this block (TRACKING_RETRIES), so a dead tracking
    server fails a command in seconds; Ray processes started inside inherit it, a user's own setting wins."""
    return environment_defaults(**TRACKING_RETRIES)


def whole_file_downloads() -> contextlib.AbstractContextManager[None]:
    """Download artifacts one request per file for one block. With an S3 artifact store the server offers ranged
    "multipart" downloads, and MLflow 3.17 runs their chunks on the thread pool that is already busy with the
    files, so downloading a model of several files deadlocks; our artifacts are small. A user's own setting wins."""
    return environment_defaults(MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="false")


@contextlib.contextmanager
def scoped_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (and its registry) at `uri` for one block, then restore it.

    `set_tracking_uri` also exports MLFLOW_TRACKING_URI: the variable is restored too (or removed), or every
    later `resolve_tracking_uri` in the process would read MLflow's default, a SQLite file in the cwd."""
    import mlflow  # here only: Ray's scoring actors and write tasks import this module and never use MLflow

    previous, exported = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
