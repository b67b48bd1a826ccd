"""The storage tier: the pipelines on the parts production uses. Ray Train checkpoints, Parquet data and the
scores table's files in an S3-compatible object store (moto's server, with IAM authentication), MLflow on
PostgreSQL 15 with artifacts in S3, started with `make mlflow-server`, and the scores table's catalog in the same
PostgreSQL. Every server is a real process on 127.0.0.1, stopped by its pid. Where PostgreSQL or moto is missing
the tier is skipped with what to install, except with CI=true: it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.commands import score, train
from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from pipelines.storage.fault_points import FAULT_ENV
from pipelines.storage.scores_table import CATALOG_ENV, ScoresTable
from tests.integration.conftest import (
    beaten_by_a_rival,
    dead_train_workers,
    epoch_steps,
    free_port,
    run_command,
    stop_local_ray,
    train_killing_a_worker,
    train_overrides,
)
from tests.integration.storage_services import MlflowService, postgres, s3_server

pytestmark = [pytest.mark.storage, pytest.mark.integration, pytest.mark.own_ray]

DATA, ARTIFACTS = "vae-data", "vae-mlflow"
MODEL = "s3-thyroid"
EPOCHS = 6  # a worker is killed after epoch 3


@pytest.fixture(scope="module")
def s3():
    """The S3 server, and its endpoint and credentials in the standard AWS variables for this module
    (Ray, started after this, passes them to every worker)."""
    with s3_server((DATA, ARTIFACTS)) as server, pytest.MonkeyPatch.context() as env:
        for name, value in server.env.items():
            env.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def mlflow_pg(s3, tmp_path_factory):
    """MLflow on PostgreSQL with artifacts in S3; the same server's `iceberg` database is the scores table's
    catalog (VAE_CATALOG_URI for this module)."""
    with postgres() as backend, pytest.MonkeyPatch.context() as env:
        server = backend.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        env.setenv(CATALOG_ENV, f"{server}/iceberg")
        service = MlflowService(backend, f"s3://{ARTIFACTS}/artifacts", s3, tmp_path_factory.mktemp("mlflow-pg"))
        service.start()
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture(scope="module")
def s3_ray(s3):
    import ray

    from pipelines.runtime.cluster import start_local_ray

    stop_local_ray()  # this module's Ray must start with the S3 variables set
    start_local_ray(num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def s3_thyroid(s3, thyroid_dir, scoring_input) -> str:
    """The thyroid rows in the bucket: train/ (three files), test.parquet, and to-score/ (four files with
    three rows that cannot be scored)."""
    client = s3.client()
    for path in [*sorted((thyroid_dir / "train").glob("*.parquet")), thyroid_dir / "test.parquet"]:
        client.upload_file(str(path), DATA, f"thyroid/{path.relative_to(thyroid_dir)}")
    for path in sorted(scoring_input.glob("*.parquet")):
        client.upload_file(str(path), DATA, f"to-score/{path.name}")
    return f"s3://{DATA}"


@pytest.fixture(scope="module")
def trained(s3_ray, mlflow_pg, s3_thyroid, tmp_path_factory):
    """Two CPU workers train with checkpoints on S3; one is SIGKILLed after epoch 3; the run resumes from its
    checkpoint on S3 and registers the model in MLflow on PostgreSQL + S3."""
    overrides = [*train_overrides(f"{s3_thyroid}/thyroid/train", tmp_path_factory.mktemp("unused"), mlflow_pg.uri,
                                  MODEL, epochs=EPOCHS),
                 f"run.storage_path=s3://{DATA}/runs", "scaling.num_workers=2"]  # fmt: skip
    config = load_config(CONFIG_DIR / "train.yaml", overrides)
    result, victim = train_killing_a_worker(lambda: train.run(config), mlflow_pg.uri, MODEL)
    return result, victim


@pytest.mark.timeout(900)
def test_training_on_s3_resumes_after_a_killed_worker_with_the_right_epoch_count(trained, s3, mlflow_pg):
    result, victim = trained
    assert victim in dead_train_workers()
    assert result.last_epoch == EPOCHS
    assert epoch_steps(MlflowClient(mlflow_pg.uri), result.run_id) == list(range(1, EPOCHS + 1))  # each once
    checkpoints = [k for k in s3.keys(DATA, f"runs/{MODEL}/") if k.endswith("train_state.pt")]
    assert checkpoints, "no checkpoint objects in the bucket"


def test_the_model_registered_on_postgres_and_s3_loads_and_scores_in_a_fresh_process(trained, s3, mlflow_pg):
    result, _ = trained
    version = MlflowClient(mlflow_pg.uri).get_model_version_by_alias(MODEL, "challenger")
    assert version.run_id == result.run_id
    artifacts = s3.keys(ARTIFACTS, "artifacts/")
    assert any(k.endswith("detector/weights.pt") for k in artifacts), artifacts[:20]  # the logged model's files
    assert any(f"/{result.run_id}/artifacts/plots/" in k for k in artifacts)  # the run's plots too
    program = (
        "import faulthandler; faulthandler.dump_traceback_later(90, exit=True);"
        "import sys, pyarrow.parquet as pq; from pipelines.tracking.registry import load_registered_detector;"
        f"d = load_registered_detector('models:/{MODEL}@challenger', sys.argv[1]);"
        f"rows = pq.read_table('s3://{DATA}/thyroid/test.parquet').to_pandas();"
        "s, _ = d.score(rows); print(len(rows), float((s > d.threshold).mean()))"
    )  # a fresh process with only the environment: endpoint and credentials in the AWS variables
    done = subprocess.run([sys.executable, "-c", program, mlflow_pg.uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows, rate = done.stdout.split()[-2:]
    assert int(rows) == pq.read_table(f"s3://{DATA}/thyroid/test.parquet").num_rows and 0 < float(rate) < 0.5


def _score_config(mlflow_uri: str, run_date: str, **extra: str) -> ScoreJobConfig:
    overrides = [f"input=s3://{DATA}/to-score/", f"output=s3://{DATA}/scores", f"model={MODEL}@challenger",
                 f"run_date={run_date}", f"tracking.tracking_uri={mlflow_uri}", "actors=1", "cpus_per_actor=0.5",
                 *(f"{k}={v}" for k, v in extra.items())]  # fmt: skip
    return load_config(CONFIG_DIR / "score.yaml", overrides, cls=ScoreJobConfig)


def _table() -> ScoresTable:
    return ScoresTable.at(f"s3://{DATA}/scores", "vae.scores")  # the catalog from VAE_CATALOG_URI


def _committed_files_exist(s3) -> bool:
    referenced = {task.file.file_path for task in _table().load().scan().plan_files()}
    stored = {f"s3://{DATA}/{key}" for key in s3.keys(DATA, "scores/")}
    return bool(referenced) and referenced <= stored


@pytest.mark.timeout(600)
def test_mlflow_restarted_keeps_models_and_runs_and_the_next_step_succeeds(trained, mlflow_pg):
    result, _ = trained
    mlflow_pg.stop()
    mlflow_pg.start()  # same port; PostgreSQL kept everything
    server = [" ".join(p.cmdline()) for p in psutil.Process(mlflow_pg.proc.pid).children(recursive=True)]
    assert not [c for c in server if "huey" in c], server  # no job runner: 8 processes, ~1.4 GB
    client = MlflowClient(mlflow_pg.uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert [m.name for m in client.search_registered_models()] == [MODEL]
    assert client.get_model_version_by_alias(MODEL, "challenger").run_id == result.run_id
    summary = score.run(_score_config(mlflow_pg.uri, "2026-11-20"))
    assert summary.rows_scored + summary.rows_quarantined == summary.rows_read


@pytest.mark.timeout(900)
def test_scoring_from_s3_to_an_iceberg_table_on_postgres_commits_each_date_once_and_survives_kills_and_rivals(
    trained, s3, mlflow_pg
):
    import ray

    source = pq.read_table(f"s3://{DATA}/to-score/").to_pandas()
    date = "2026-11-25"
    first = score.run(_score_config(mlflow_pg.uri, date))
    rows = _table().read(date).to_pandas()
    assert sorted(rows.row_id) == sorted(source.row_id)  # every row exactly once
    assert sorted(rows[rows.status == "quarantined"].row_id) == [900_002, 900_003]
    assert _table().catalog_uri.startswith("postgresql+psycopg://") and _committed_files_exist(s3)

    second = score.run(_score_config(mlflow_pg.uri, date))  # the same date again: replaced exactly
    again = _table().read(date).to_pandas()
    assert sorted(again.row_id) == sorted(source.row_id) and again.scored_at.nunique() == 1
    assert len(_table().read(date, first.snapshot)) == len(rows)  # the first run, by its snapshot

    command = [sys.executable, "-m", "pipelines", "score", "--config", str(CONFIG_DIR / "score.yaml"),
               f"input=s3://{DATA}/to-score/", f"output=s3://{DATA}/scores", f"model={MODEL}@challenger",
               f"run_date={date}", f"tracking.tracking_uri={mlflow_pg.uri}",
               f"ray_address={ray.get_runtime_context().gcs_address}"]  # fmt: skip
    committed = second.snapshot
    for point in ("write", "commit", "committed"):  # killed while writing, before the commit, right after it
        killed = subprocess.run(command, env={**os.environ, FAULT_ENV: point}, capture_output=True, text=True,
                                timeout=400, start_new_session=True)  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        seen = _table().read(date).to_pandas()
        assert sorted(seen.row_id) == sorted(source.row_id) and seen.scored_at.nunique() == 1, point
        current = _table().load().current_snapshot().snapshot_id
        assert (current != committed) == (point == "committed"), point  # only a kill after the commit published
        committed = current
    assert _committed_files_exist(s3)

    rival = beaten_by_a_rival(_score_config(mlflow_pg.uri, date))
    final = _table().read(date).to_pandas()
    assert sorted(final.row_id) == sorted(source.row_id) and final.scored_at.nunique() == 1
    assert _table().load().current_snapshot().snapshot_id == rival.snapshot and _committed_files_exist(s3)
    assert len(_table().read("2026-11-20")) == len(source)  # the date scored by the MLflow restart test: untouched


DENIED = "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
UNREACHABLE = "the endpoint is unreachable: check AWS_ENDPOINT_URL and the network"
BAD_STORAGE = {  # case: (environment changes, overrides, the error line after "vae-anomaly score: error: ")
    "missing bucket": ({}, {"input": "s3://no-such-bucket/rows/"},
                       "s3://no-such-bucket/rows/: the bucket does not exist"),
    "wrong credentials": ({"AWS_SECRET_ACCESS_KEY": "not-the-secret-0123"}, {},
                          f"s3://{DATA}/to-score/: {DENIED}"),
    "unreachable endpoint": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, {},
                             f"s3://{DATA}/to-score/: {UNREACHABLE}"),
    "missing output bucket": ({}, {"output": "s3://no-such-bucket/scores"},
                              "s3://no-such-bucket/scores: the bucket does not exist"),
}  # fmt: skip


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", BAD_STORAGE, ids=list(BAD_STORAGE))
def test_bad_storage_fails_in_one_line_naming_the_uri_and_writes_nothing(case, trained, s3, mlflow_pg, capsys,
                                                                         monkeypatch):  # fmt: skip
    env_changes, overrides, expected = BAD_STORAGE[case]
    before = s3.keys(DATA)
    for name, value in env_changes.items():
        monkeypatch.setenv(name, value.format(port=free_port()))
    settings = {"input": f"s3://{DATA}/to-score/", "output": f"s3://{DATA}/scores", "model": f"{MODEL}@challenger",
                "run_date": "2026-11-01", "tracking.tracking_uri": mlflow_pg.uri, **overrides}  # fmt: skip
    done = run_command(capsys, "score", *(f"{k}={v}" for k, v in settings.items()))
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.last_error_line == f"vae-anomaly score: error: {expected}"
    assert s3.secret_key not in done.stderr + done.stdout and "not-the-secret-0123" not in done.stderr
    monkeypatch.undo()  # the module's own credentials again, to look at the bucket
    assert s3.keys(DATA) == before  # nothing written
