"""The scheduled scoring job: real local Ray, real `mlflow server`, real Parquet in and out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.commands import score
from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from pipelines.storage.partitions import SUCCESS, is_complete
from pipelines.tracking.registry import load_registered_detector
from tests.integration.conftest import register_scoring_model, run_command, running_mlflow_server


def _overrides(input_dir, output, mlflow_server, model, run_date="2026-11-24") -> list[str]:
    return [f"input={input_dir}", f"output={output}", f"model={model}", f"run_date={run_date}",
            f"tracking.tracking_uri={mlflow_server}", "actors=1"]  # fmt: skip


def _big_input(rows: pd.DataFrame, directory) -> object:
    """~90k rows (the held-out rows 48 times, new ids) in 8 files, so that scoring and writing take long enough to be
    interrupted."""
    directory.mkdir()
    for i in range(8):
        rows.assign(row_id=rows.row_id + i * 10_000_000).pipe(
            lambda f: pd.concat([f] * 6, ignore_index=True).assign(row_id=lambda g: g.row_id + np.arange(len(g)))
        ).to_parquet(directory / f"part-{i}.parquet", index=False)  # fmt: skip
    return directory


def _files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.mark.timeout(600)
def test_every_row_is_scored_or_quarantined_once_and_reruns_replace_the_partition(
    local_ray, mlflow_server, scoring_model, scoring_input, tmp_path
):
    config = load_config(CONFIG_DIR / "score.yaml", _overrides(scoring_input, tmp_path, mlflow_server, scoring_model),
                         cls=ScoreJobConfig)  # fmt: skip
    summary = score.run(config)
    partition = tmp_path / "run_date=2026-11-24"
    assert summary.partition == str(partition) and is_complete(partition)
    scored = pd.read_parquet(partition)  # readers skip _quarantine/ and _SUCCESS
    quarantined = pd.read_parquet(partition / "_quarantine")
    source = pd.read_parquet(scoring_input)
    assert len(scored) + len(quarantined) == len(source) == summary.rows_read
    assert sorted([*scored.row_id, *quarantined.row_id]) == sorted(source.row_id)
    assert sorted(quarantined.row_id) == [900_001, 900_002, 900_003]
    assert set(quarantined.quarantine_reason) == {"TSH is missing or not finite", "T3 is missing or not finite",
                                                  "FTI is missing or not finite"}  # fmt: skip
    assert set(scored.columns) >= {"row_id", "anomaly_score", "is_anomaly", "top_feature_1", "top_feature_1_share",
                                   "model_name", "model_version", "run_date", "scored_at"}  # fmt: skip
    assert (scored.model_name == "thyroid-scorer").all() and (scored.run_date == "2026-11-24").all()
    shares = scored[[f"top_feature_{i}_share" for i in (1, 2, 3)]].to_numpy()
    assert (shares >= 0).all() and (shares.sum(1) <= 1 + 1e-6).all()

    detector = load_registered_detector("models:/thyroid-scorer@champion", mlflow_server)
    expected, _ = detector.score(source.set_index("row_id").loc[scored.row_id].reset_index())
    np.testing.assert_allclose(scored.anomaly_score.to_numpy(), expected, rtol=1e-4, atol=1e-4)
    assert (scored.is_anomaly == (scored.anomaly_score > detector.threshold)).all()
    assert summary.anomalies == int(scored.is_anomaly.sum())

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("vae-anomaly-scoring").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`vae.partition` = '{partition}'")  # this job's run only
    assert run.data.metrics["rows_quarantined"] == 3 and run.data.metrics["rows_scored"] == len(scored)
    assert run.data.metrics["psi"] == pytest.approx(summary.psi) and "score_p99" in run.data.metrics
    assert summary.psi < 0.1, "held-out rows of the training distribution must not look like drift"

    files_before = _files(tmp_path)
    again = score.run(config)
    rescored = pd.read_parquet(partition)
    assert again.rows_scored == summary.rows_scored and len(rescored) == len(scored)
    pd.testing.assert_frame_equal(
        rescored.drop(columns="scored_at").sort_values("row_id").reset_index(drop=True),
        scored.drop(columns="scored_at").sort_values("row_id").reset_index(drop=True),
    )
    assert len(_files(tmp_path)) == len(files_before)  # replaced, not appended
    assert not list((tmp_path / ".staging").iterdir())


@pytest.mark.timeout(900)
def test_a_job_killed_while_writing_leaves_no_partial_partition(
    local_ray, capsys, mlflow_server, scoring_model, thyroid_dir, tmp_path
):
    rows = pd.read_parquet(thyroid_dir / "test.parquet")
    big = _big_input(rows, tmp_path / "big")
    output = tmp_path / "out"
    arguments = [
        "score",
        "--config",
        str(CONFIG_DIR / "score.yaml"),
        *_overrides(big, output, mlflow_server, scoring_model, run_date="2026-11-25"),
        "batch_size=2048",
        "rows_per_file=8192",  # many files, so that the kill lands between two of them
    ]
    job = subprocess.Popen([sys.executable, "-m", "pipelines", *arguments], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    partition = output / "run_date=2026-11-25"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and job.poll() is None:
        staged = list((output / ".staging").glob("run_date=2026-11-25-*/*.parquet"))
        if staged:
            os.killpg(job.pid, signal.SIGKILL)  # the driver and its local Ray, mid-write
            break
        time.sleep(0.05)
    job.wait(60)
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    assert not partition.exists() or is_complete(partition)
    assert not partition.exists()  # killed before the publish step

    done = run_command(capsys, *arguments)  # the re-run, in this process on the shared Ray
    assert done.returncode == 0, done.stderr[-2000:]
    assert is_complete(partition)
    assert len(pd.read_parquet(partition)) == 8 * 6 * len(rows)
    assert (partition / SUCCESS).is_file() and not list((output / ".staging").iterdir())


@pytest.mark.timeout(600)
def test_a_tracking_server_that_dies_mid_scoring_fails_in_one_line_within_2_minutes_and_publishes_nothing(
    local_ray, capsys, thyroid_dir, tmp_path
):
    big = _big_input(pd.read_parquet(thyroid_dir / "test.parquet"), tmp_path / "big")
    output, server_root = tmp_path / "out", tmp_path / "mlflow"
    server_root.mkdir()
    killed_at: list[float] = []

    def kill_while_writing(server: subprocess.Popen) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed_at:
            if list((output / ".staging").glob("run_date=2026-11-26-*/*.parquet")):
                os.killpg(server.pid, signal.SIGKILL)  # the tracking server dies mid-job, without a goodbye
                killed_at.append(time.monotonic())
            time.sleep(0.05)

    with running_mlflow_server(server_root) as (uri, server):
        model = register_scoring_model(uri, thyroid_dir)
        killer = threading.Thread(target=kill_while_writing, args=(server,), daemon=True)
        killer.start()
        done = run_command(capsys, "score", "--config", str(CONFIG_DIR / "score.yaml"),
                           *_overrides(big, output, uri, model, run_date="2026-11-26"), "batch_size=2048",
                           "rows_per_file=8192")  # fmt: skip
        ended = time.monotonic()
        killer.join(timeout=5)
    assert killed_at, "the job finished before the tracking server could be killed"
    assert done.returncode == 1, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"vae-anomaly score: error: MLflow at {uri} failed"), line
    assert ended - killed_at[0] < 120
    assert not (output / "run_date=2026-11-26").exists()  # nothing published
