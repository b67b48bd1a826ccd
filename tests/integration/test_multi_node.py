"""The scoring job on a Ray of three nodes (ray.cluster_utils.Cluster: several nodes on one machine): a multi-file
input is scored with every row exactly once, and a location some node cannot see is refused before any work."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.commands import score
from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from tests.integration.conftest import published_rows, stop_local_ray

pytestmark = [pytest.mark.own_ray, pytest.mark.timeout(900)]
FILES = 12


@pytest.fixture(scope="module")
def three_nodes():
    import ray
    from ray.cluster_utils import Cluster

    stop_local_ray()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def many_files(thyroid_dir, tmp_path_factory):
    """The held-out thyroid rows, repeated under new row ids into FILES Parquet files."""
    rows = pd.read_parquet(thyroid_dir / "test.parquet")
    directory = tmp_path_factory.mktemp("many-files")
    for i in range(FILES):
        rows.assign(row_id=rows.row_id + i * 1_000_000).to_parquet(directory / f"part-{i:02d}.parquet", index=False)
    return directory


def _config(input_dir, output, mlflow_server, model) -> ScoreJobConfig:
    overrides = [f"input={input_dir}", f"output={output}", f"model={model}", "run_date=2026-11-24",
                 f"tracking.tracking_uri={mlflow_server}", "actors=3", "batch_size=512"]  # fmt: skip
    return load_config(CONFIG_DIR / "score.yaml", overrides, cls=ScoreJobConfig)


def test_a_multi_file_input_is_scored_across_the_nodes_every_row_exactly_once(
    three_nodes, mlflow_server, scoring_model, many_files, tmp_path
):
    from ray._private.state import actors  # the GCS's actor table: the state API needs a dashboard

    summary = score.run(_config(many_files, tmp_path, mlflow_server, scoring_model))
    written = published_rows(tmp_path, "2026-11-24").row_id.to_numpy()
    source = pd.read_parquet(many_files).row_id.to_numpy()
    assert len(written) == len(source) == summary.rows_read == summary.rows_scored
    np.testing.assert_array_equal(np.sort(written), np.sort(source))  # each row once: no loss, no duplicate
    scorers = [a for a in actors().values() if "ScoreActor" in a["ActorClassName"]]
    assert len(scorers) >= 3
    assert len({a["Address"]["NodeID"] for a in scorers}) >= 2, "the scoring actors ran on one node only"


def test_the_default_relative_output_is_refused_before_any_work(three_nodes, mlflow_server, scoring_model, many_files):
    client = MlflowClient(mlflow_server)
    scoring = client.get_experiment_by_name("vae-anomaly-scoring")
    runs_before = len(client.search_runs([scoring.experiment_id])) if scoring else 0
    with pytest.raises(Exception, match=r"output: 'outputs/scores' is a relative path, which on a cluster of 3 "
                                        r"nodes resolves inside the driver's working directory"):  # fmt: skip
        score.run(_config(many_files, "outputs/scores", mlflow_server, scoring_model))
    scoring = client.get_experiment_by_name("vae-anomaly-scoring")
    assert (len(client.search_runs([scoring.experiment_id])) if scoring else 0) == runs_before
