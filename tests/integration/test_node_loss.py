"""A worker node disappears mid-training (ray.cluster_utils.Cluster: several nodes on one machine)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from mlflow import MlflowClient

from pipelines.commands import train
from pipelines.runtime.cluster import on_local_ray
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from tests.integration.conftest import stop_local_ray, train_overrides


@pytest.mark.own_ray
@pytest.mark.timeout(900)
def test_training_survives_losing_a_worker_node(mlflow_server, thyroid_dir, tmp_path):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    stop_local_ray()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    assert not on_local_ray()  # a cluster joined by address: the scoring job's actors keep Ray Data's restarts
    epochs = 6  # killed after epoch 3: as many epochs again after the restore
    overrides = [*train_overrides(thyroid_dir / "train", tmp_path, mlflow_server, "node-loss", epochs=epochs),
                 "run.max_failures=3"]  # fmt: skip
    outcome: dict[str, object] = {}
    try:
        thread = threading.Thread(
            target=lambda: outcome.update(result=train.run(load_config(CONFIG_DIR / "train.yaml", overrides))),
            daemon=True,
        )
        thread.start()
        client = MlflowClient(mlflow_server)
        removed = None
        deadline = time.monotonic() + 600
        while removed is None and thread.is_alive() and time.monotonic() < deadline:
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                      filter_string="tags.`vae.run_name` = 'node-loss'")  # fmt: skip
            if runs and len(client.get_metric_history(runs[0].info.run_id, "val_loss")) >= 3:
                alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
                workers = list_actors(cluster.address, filters=alive)
                hosts = {a.node_id for a in workers}
                removed = next(n for n in nodes if n.node_id in hosts)  # a worker node, never the head
                cluster.remove_node(removed)  # main thread only
            time.sleep(0.2)
        assert removed is not None, "training never reached epoch 3"
        thread.join(timeout=600)
        result = outcome["result"]
        assert result.last_epoch == epochs
        steps = {m.step for m in client.get_metric_history(result.run_id, "val_loss")}
        assert steps == set(range(1, epochs + 1))
    finally:
        ray.shutdown()
        cluster.shutdown()
