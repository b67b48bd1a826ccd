"""A sweep's default concurrency counts the GPUs an autoscaling cluster can add, read from the autoscaler's config
in the GCS (written here as a KubeRay / `ray up` cluster writes it), not only the GPUs present at the start."""

from __future__ import annotations

import pytest

from pipelines.commands.tune import concurrent_trials
from pipelines.runtime.cluster import cluster_capacity
from pipelines.settings.yaml_configs import CONFIG_DIR, TunePipelineConfig, load_config


@pytest.fixture
def autoscaling_gpu_group(local_ray):
    """The autoscaler config of `infra/`'s cluster: a GPU group of 0 to 8 nodes of 1 GPU and 8 CPUs."""
    import ray._raylet
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    config = autoscaler_pb2.ClusterConfig()
    group = config.node_group_configs.add(name="gpu", min_count=0, max_count=8)
    group.resources["GPU"], group.resources["CPU"] = 1, 8
    key, namespace = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    internal_kv._internal_kv_put(key, config.SerializeToString(), namespace=namespace)
    try:
        yield
    finally:
        internal_kv._internal_kv_del(key, namespace=namespace)


def _cluster_sweep(*overrides: str) -> TunePipelineConfig:
    return load_config(CONFIG_DIR / "tune-cluster.yaml", list(overrides), cls=TunePipelineConfig)


def test_the_cluster_sweep_runs_as_many_trials_as_the_gpu_group_holds_at_its_maximum(autoscaling_gpu_group):
    import ray

    assert ray.cluster_resources().get("GPU", 0) == 0, "no GPU node has started"
    assert cluster_capacity("GPU") == 8
    assert concurrent_trials(_cluster_sweep()) == 4  # 8 GPUs // (2 workers x 1 GPU)
    assert concurrent_trials(_cluster_sweep("tune.max_concurrent_trials=3")) == 3


def test_without_an_autoscaler_the_nodes_present_decide(local_ray):
    import ray

    assert cluster_capacity("CPU") == ray.cluster_resources()["CPU"] == 4
    assert concurrent_trials(_cluster_sweep()) == 1  # no GPU at all: one trial, never zero
    assert concurrent_trials(_cluster_sweep("scaling.use_gpu=false", "scaling.cpus_per_worker=1")) == 2
