"""`make train-cluster` and `make score-cluster`: `ray job submit` against a Ray head this module starts."""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.partitions import is_complete
from tests.integration.conftest import PROJECT, VENV_BIN, free_port, stop_process_group, wait_for_http


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` on 127.0.0.1 in its own process group; yields (dashboard URL, env)."""
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path_factory.mktemp("head") / "ray-head.log", "w")  # noqa: SIM115 - open for the head's life
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=4", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dashboard}"
        wait_for_http(f"{address}/api/version", timeout=180, proc=head)
        _wait_for_job_agent(address)
        yield address, env
    finally:
        stop_process_group(head, grace=30)
        log.close()


def _wait_for_job_agent(address: str, timeout: float = 180) -> None:
    """The dashboard answers before the node's job agent has registered ("No available agent to submit
    job"): submit a no-op job until one is accepted and succeeds."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = JobSubmissionClient(address)
            job = client.submit_job(entrypoint="true")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the no-op job on {address} did not finish")
        time.sleep(1)


def _make(target: str, address: str, env: dict, mlflow_server: str, overrides: list[str]):
    return subprocess.run(
        ["make", "--no-print-directory", target, f"RAY_ADDRESS={address}", f"MLFLOW_TRACKING_URI={mlflow_server}",
         f"ARGS={' '.join(overrides)}"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip


@pytest.mark.timeout(900)
def test_make_train_cluster_then_score_cluster(ray_head, mlflow_server, thyroid_dir, tmp_path):
    address, env = ray_head
    trained = _make("train-cluster", address, env, mlflow_server, [
        f"data.path={thyroid_dir / 'train'}", f"run.storage_path={tmp_path / 'runs'}", "run.name=cluster-job",
        "scaling.use_gpu=false", "scaling.num_workers=2", "scaling.cpus_per_worker=1", "train.epochs=3",
        "model.hidden_dims=[32,32]", "tracking.model_name=cluster-job",
    ])  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "succeeded" in trained.stdout + trained.stderr
    assert MlflowClient(mlflow_server).get_model_version_by_alias("cluster-job", "challenger").version == "1"

    output = tmp_path / "scores"
    scored = _make("score-cluster", address, env, mlflow_server, [
        f"input={thyroid_dir / 'test.parquet'}", f"output={output}", "model=cluster-job@challenger",
        "run_date=2026-11-24", "actors=1",
    ])  # fmt: skip
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    partition = output / "run_date=2026-11-24"
    assert is_complete(partition)
    assert len(pd.read_parquet(partition)) == len(pd.read_parquet(thyroid_dir / "test.parquet"))


def test_cluster_targets_require_the_addresses():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    for target in ("train-cluster", "score-cluster"):
        done = subprocess.run(["make", "--no-print-directory", target], cwd=PROJECT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode != 0 and f"{target}: set RAY_ADDRESS" in done.stderr
