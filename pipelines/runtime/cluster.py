"""Starting or joining Ray for a pipeline run, and Ray's console output kept to what the pipelines report."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import ray
import ray.data
from ray.util.annotations import RayDeprecationWarning

from pipelines.tracking.scoped_env import environment_defaults


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


@contextlib.contextmanager
def ray_data_context() -> Iterator[None]:
    """This process's Ray Data context as the pipelines use it, for one block, restored after:
    - quiet: the pipelines print their own progress, so no per-operator progress bars or execution banners (nor
      the notice that they are off), and the `ray.data` logger at WARNING;
    - Parquet read by the V1 datasource: Ray 2.60's DataSourceV2 `read_parquet` (ListFiles -> ReadFiles) took
      5-9 s per execution on a 1,839-row file against 0.5 s for V1 (measured on the 2-core laptop), and a
      training run executes its reads four or more times."""
    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "use_datasource_v2")
    previous = [getattr(context, name) for name in names]
    for name in names:
        setattr(context, name, False)
    try:
        with logger_levels(logging.WARNING, "ray.data"), logger_levels(logging.ERROR, PROGRESS_LOGGER):
            yield
    finally:
        for name, value in zip(names, previous, strict=True):
            setattr(context, name, value)


def _setup_local_worker() -> None:
    """Worker-process setup hook of a local Ray.

    Names this cluster in RAY_ADDRESS: Ray's state API (which Train's placement-group cleaner uses to see that a
    stopped trial's controller is gone) otherwise reads /tmp/ray/ray_current_cluster, written by the last
    `ray start`: on a laptop or CI box, a cluster long gone. Without this, trials stopped by ASHA keep their
    workers' CPUs and the next trial waits forever.

    Keeps Ray's own chatter off the console: the deprecation warnings Ray's internal actors raise about Ray's own
    calls, and what every Ray Data actor logs about its executions (the notice that progress bars are off, a line
    per finished execution)."""
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)


PROGRESS_LOGGER = "ray.data._internal.progress"  # Ray Data's "Progress bars disabled" notice
LOCAL_ENV = {
    # The preemption watcher follows node drains (autoscaler, spot instances), which a local Ray has none of; its
    # actor logs a core-worker error about its constructor arguments on every run.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
# A sweep on a laptop starts ~20 worker processes (trials, Train controllers and workers, Ray Data actors); the
# raylet warns each time the count passes another multiple of its startup concurrency (by default the core count).
# Set for the raylet `ray.init` starts (an environment variable: a `_system_config` warns on the next init).
STARTUP_CONCURRENCY = {"RAY_worker_maximum_startup_concurrency": "16"}


def start_local_ray(num_cpus: int) -> None:
    """A private local Ray with `num_cpus` logical CPUs and no auth token, never attached to a stale cluster."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    env_vars = dict(LOCAL_ENV)  # a copy: Ray adds the setup hook's key to the dict it is given
    with environment_defaults(**STARTUP_CONCURRENCY):
        ray.init(address="local", num_cpus=num_cpus, logging_level="WARNING",
                 runtime_env={"worker_process_setup_hook": _setup_local_worker, "env_vars": env_vars})  # fmt: skip


@contextlib.contextmanager
def ray_session(address: str | None, local_cpus: int) -> Iterator[None]:
    """Join `address` (else RAY_ADDRESS), or start a local Ray with `local_cpus` logical CPUs; an already
    initialised Ray (a test's, a notebook's) is used as it is and left running; `ray_data_context` inside."""
    with ray_data_context():
        if ray.is_initialized():
            yield
            return
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level="WARNING")
        else:
            start_local_ray(local_cpus)
        try:
            yield
        finally:
            ray.shutdown()
