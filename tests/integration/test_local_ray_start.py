"""A local Ray start that misses Ray's 30 s raylet wait (a busy laptop) is tried again, after ending what the
failed start left running."""

import itertools
import time

import psutil
import pytest

from tests.integration.conftest import stop_local_ray

pytestmark = [pytest.mark.integration, pytest.mark.own_ray]


class JumpingClock:
    """`time` as Ray's node module sees it, except that `monotonic` runs 31 s ahead per call while `failing`."""

    def __init__(self) -> None:
        self.failing = True
        self.ahead = itertools.count()

    def monotonic(self) -> float:
        return time.monotonic() + (31.0 * next(self.ahead) if self.failing else 0.0)

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_start_that_times_out_is_retried_and_its_leftover_processes_are_ended(monkeypatch, capsys):
    import ray
    import ray._private.node
    import ray._private.services

    from pipelines.runtime import cluster

    stop_local_ray()
    clock, real_get_node, real_end = JumpingClock(), ray._private.services.get_node, cluster.end_new_children
    ended: list[tuple[psutil.Process, str]] = []

    def get_node(*args, **kwargs):  # the raylet never registers during the first start
        if clock.failing:
            raise RuntimeError("node info not available yet")
        return real_get_node(*args, **kwargs)

    def end_new_children(before, *args, **kwargs):
        clock.failing = False
        ended.extend((p, p.name()) for p in psutil.Process().children(recursive=True) if p.pid not in before)
        real_end(before, *args, **kwargs)

    monkeypatch.setattr(ray._private.node, "time", clock)
    monkeypatch.setattr(ray._private.services, "get_node", get_node)
    monkeypatch.setattr(cluster, "end_new_children", end_new_children)
    try:
        cluster.start_local_ray(num_cpus=2)
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        assert cluster.on_local_ray()  # the scoring job's actors run without restarts here
    finally:
        ray.shutdown()
    assert not cluster.on_local_ray()
    names = {name for _, name in ended}
    assert {"raylet", "gcs_server"} <= names, names
    assert not [p for p, _ in ended if cluster._running(p)]
    err = capsys.readouterr().err
    assert "did not start within Ray's 30 s" in err and "attempt 2 of 4" in err


def test_an_error_other_than_the_timeout_is_not_retried(monkeypatch):
    import ray

    from pipelines.runtime import cluster

    stop_local_ray()
    attempts = []

    def init(**kwargs):
        attempts.append(kwargs)
        raise ValueError("some other start-up failure")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="some other"):
        cluster.start_local_ray(num_cpus=2)
    assert len(attempts) == 1
