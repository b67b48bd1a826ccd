"""Starting or joining Ray for a pipeline run."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray
import ray.data


def quiet_ray_data() -> None:
    """The pipelines print their own progress: no per-operator progress bars or execution banners."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextlib.contextmanager
def ray_session(address: str | None, local_cpus: int) -> Iterator[None]:
    """Join `address` (else RAY_ADDRESS), or start a local Ray with `local_cpus` logical CPUs; an already
    initialised Ray (a test's, a notebook's) is used as it is and left running."""
    quiet_ray_data()
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
        ray.init(address="local", num_cpus=local_cpus, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
