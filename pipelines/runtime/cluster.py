"""Starting or joining Ray for a pipeline run, and Ray's console output kept to what the pipelines report.

By default the commands print their own lines only (and Ray Data's progress bars where stderr is a terminal);
`LOG_LEVEL=DEBUG` (what `vae-anomaly --verbose` sets) leaves Ray's logging, warnings and progress output as Ray
has them."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator

import psutil
import ray
import ray.data
from ray.data.context import ShuffleStrategy
from ray.util.annotations import RayDeprecationWarning

from pipelines.tracking.scoped_env import environment_defaults, logger_levels, verbose
from vae import ConfigError


@contextlib.contextmanager
def ray_data_context() -> Iterator[None]:
    """This process's Ray Data context as the pipelines use it, for one block, restored after:
    - quiet (unless `verbose()`): the pipelines print their own progress, so no execution banners, no notice about
      progress bars, the `ray.data` logger at WARNING, and per-operator progress bars only on a terminal;
    - Parquet read by the V1 datasource: Ray 2.60's DataSourceV2 `read_parquet` (ListFiles -> ReadFiles) took
      5-9 s per execution on a 1,839-row file against 0.5 s for V1 (measured on the 2-core laptop), and a
      training run executes its reads four or more times;
    - aggregations (the training statistics, the 0/1 check, the left-out count: all over the whole dataset, no
      key) by the sort-based shuffle: each block's partial aggregate in a task, one task combining them. Ray
      2.60's default (`shuffle_v2`) starts shuffle actors for every aggregation, even one with no key: the
      training statistics of 3,772 rows took 5.7-8.4 s that way against 2.0-2.2 s, on the same warm local Ray."""
    loud = verbose()
    values = {"use_datasource_v2": False, "shuffle_strategy": ShuffleStrategy.SORT_SHUFFLE_PULL_BASED}
    if not loud:
        values |= {"enable_progress_bars": sys.stderr.isatty(), "print_on_execution_start": False}
    with data_context_values(**values), contextlib.ExitStack() as quiet:
        if not loud:
            quiet.enter_context(logger_levels(logging.WARNING, "ray.data"))
            quiet.enter_context(logger_levels(logging.ERROR, PROGRESS_LOGGER))
        yield


@contextlib.contextmanager
def data_context_values(**values: object) -> Iterator[None]:
    """This process's Ray Data context with the attributes `values` for one block, each restored after it (a
    dataset keeps the context it was created in, so create it inside the block)."""
    context = ray.data.DataContext.get_current()
    previous = {name: getattr(context, name) for name in values}
    for name, value in values.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
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
    if verbose():
        return
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


# Ray 2.60 gives a starting node 30 s (hard-coded) to register its raylet; on a 2-core laptop under load that
# is not always enough ("The current node timed out during startup"), so a local start is tried this many times.
START_ATTEMPTS = 4
STARTUP_TIMEOUT = "timed out during startup"
_started_here: set[str] = set()  # GCS addresses of the local Rays this process started


def on_local_ray() -> bool:
    """Whether the Ray this process is connected to is a local one it started (`start_local_ray`): one node,
    so nothing of it can be lost without this process."""
    return ray.is_initialized() and ray.get_runtime_context().gcs_address in _started_here


def map_batches_on_actors(ds: ray.data.Dataset, fn: type, **kwargs: object) -> ray.data.Dataset:
    """`ds.map_batches(fn, **kwargs)` for a Ray Data actor pool (`fn` a callable class), restarts set by the Ray
    it runs on.

    Ray Data restarts a crashed actor by default; its constructor arguments are always in the object store, for
    which Ray 2.60 logs an error line per actor on every run (ray-project/ray#57733). On a local Ray there is no
    node to lose: its actors get `max_restarts=0` (a crashed actor fails the job) and the console stays clean.
    Ray 2.60 takes that only as a remote arg, which it marks deprecated (`ray_remote_args` and `ray_remote_args_fn`
    alike) with no named parameter yet: that warning is silenced for this call alone. On a cluster Ray's default
    stays."""
    if not on_local_ray():
        return ds.map_batches(fn, **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args", category=RayDeprecationWarning)
        return ds.map_batches(fn, max_restarts=0, **kwargs)


def cluster_capacity(resource: str) -> float:
    """How much of `resource` ("CPU", "GPU") the cluster can hold: the autoscaler's maximum where its config has
    one (a worker group that scales from zero counts at its `max_workers`), else what the nodes have now.

    Ray has no public call for the maximum; Ray Train checks its worker groups against this same figure.
    """
    now = float(ray.cluster_resources().get(resource, 0.0))
    most = (ray._private.state.state.get_max_resources_from_cluster_config() or {}).get(resource) or 0
    return max(now, float(most)) if most < sys.maxsize else now  # sys.maxsize: a group without a limit


def ray_logging_level() -> str:
    return "INFO" if verbose() else "WARNING"


def start_local_ray(num_cpus: int, attempts: int = START_ATTEMPTS) -> None:
    """A private local Ray with `num_cpus` logical CPUs and no auth token, never attached to a stale cluster.

    A start that times out (a busy machine) is retried up to `attempts` times in all, with a line on stderr each
    time; the processes the failed start left behind (its GCS, raylet, ...) are ended first."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    log_level = {"LOG_LEVEL": os.environ["LOG_LEVEL"]} if "LOG_LEVEL" in os.environ else {}
    for attempt in range(1, attempts + 1):
        before = {child.pid for child in psutil.Process().children(recursive=True)}
        # new dicts each time: Ray adds the setup hook's key to the env_vars it is given
        runtime_env = {"worker_process_setup_hook": _setup_local_worker, "env_vars": {**LOCAL_ENV, **log_level}}
        try:
            with environment_defaults(**STARTUP_CONCURRENCY):
                ray.init(address="local", num_cpus=num_cpus, logging_level=ray_logging_level(), runtime_env=runtime_env)
            _started_here.add(ray.get_runtime_context().gcs_address)
            return
        except Exception as err:
            if STARTUP_TIMEOUT not in str(err) or attempt == attempts:
                raise
            end_new_children(before)
            print(f"the local Ray did not start within Ray's 30 s (a busy machine?): starting it again, "
                  f"attempt {attempt + 1} of {attempts}", file=sys.stderr, flush=True)  # fmt: skip


def end_new_children(before: set[int], grace_s: float = 10.0) -> None:
    """End this process's descendants whose pid is not in `before` (`end_processes`)."""
    end_processes([child for child in psutil.Process().children(recursive=True) if child.pid not in before], grace_s)


def end_processes(processes: list[psutil.Process], grace_s: float = 10.0) -> None:
    """SIGTERM each process, then SIGKILL any still running after `grace_s` (a zombie counts as ended); those
    that are this process's children are reaped."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    deadline = time.monotonic() + grace_s
    while any(map(_running, processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in filter(_running, processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=1)


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (an ended grandchild stays a zombie until its own parent reaps it)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def require_local_resources(
    address: str | None, local_cpus: int, cpus: float, gpus: float, what: str, setting: str = "run.local_cpus"
) -> None:
    """Raise ConfigError when the local Ray that `ray_session` would start (no `address`, no RAY_ADDRESS, no Ray
    already running) has fewer than `cpus` logical CPUs or this machine fewer than `gpus` GPUs for one unit of
    `what` (a worker group, a trial, an actor): Ray would wait for them forever (Ray Train skips its check of a
    cluster without an autoscaler and retries the wait without end). A cluster's capacity is Ray's to manage.
    `setting`: the config key of `local_cpus`, named in the message."""
    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    if cpus > local_cpus:
        raise ConfigError(f"{what} needs {cpus:g} CPUs, more than the local Ray's {setting}={local_cpus}: raise "
                          "it, or ask for fewer CPUs")  # fmt: skip
    if gpus:
        import torch

        if gpus > (have := torch.cuda.device_count()):
            raise ConfigError(f"{what} needs {gpus:g} GPU(s); this machine has {have}")


@contextlib.contextmanager
def ray_session(address: str | None, local_cpus: int) -> Iterator[None]:
    """Join `address` (else RAY_ADDRESS), or start a local Ray with `local_cpus` logical CPUs; an already
    initialised Ray (a test's, a notebook's) is used as it is and left running; `ray_data_context` inside.

    Lines Ray forwards from workers (a training run's epoch lines) keep Ray's "(RayTrainWorker pid=...)" prefix,
    coloured only where stdout is a terminal: Ray colours it always, which leaves escape codes in a log file
    (RAY_COLOR_PREFIX set by the user wins)."""
    plain_prefix = {} if sys.stdout.isatty() else {"RAY_COLOR_PREFIX": "0"}
    with ray_data_context(), environment_defaults(**plain_prefix):
        if ray.is_initialized():
            yield
            return
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level=ray_logging_level())
        else:
            start_local_ray(local_cpus)
        try:
            yield
        finally:
            ray.shutdown()
