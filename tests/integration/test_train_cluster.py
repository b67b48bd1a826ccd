"""`make train-cluster`: `ray job submit` against a Ray head this test starts on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow import MlflowClient

from tests.integration.conftest import PROJECT, VENV_BIN, free_port, stop_process_group, wait_for_http


@pytest.mark.timeout(900)
def test_make_train_cluster_runs_a_job_that_registers_a_model(mlflow_server, thyroid_dir, tmp_path):
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "ray-head.log", "w")  # noqa: SIM115 - open for the head's whole life
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=4", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{dashboard}/api/version", timeout=180, proc=head)
        overrides = " ".join([
            f"data.path={thyroid_dir / 'train'}", f"run.storage_path={tmp_path / 'runs'}", "run.name=cluster-job",
            "scaling.use_gpu=false", "scaling.num_workers=2", "scaling.cpus_per_worker=1", "train.epochs=3",
            "model.hidden_dims=[32,32]", "train.batch_size=128", "tracking.model_name=cluster-job",
        ])  # fmt: skip
        done = subprocess.run(
            ["make", "--no-print-directory", "train-cluster", f"RAY_ADDRESS=http://127.0.0.1:{dashboard}",
             f"MLFLOW_TRACKING_URI={mlflow_server}", f"ARGS={overrides}"],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=800,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in done.stdout + done.stderr
        version = MlflowClient(mlflow_server).get_model_version_by_alias("cluster-job", "challenger")
        assert version.version == "1"
    finally:
        stop_process_group(head, grace=30)
        log.close()


def test_make_train_cluster_requires_the_addresses():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    done = subprocess.run(["make", "--no-print-directory", "train-cluster"], cwd=PROJECT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "set RAY_ADDRESS" in done.stderr
