"""The scheduled scoring job: real local Ray, real `mlflow server`, real Parquet in and out."""

from __future__ import annotations

import json
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
from pipelines.storage.fault_points import FAULT_ENV
from pipelines.storage.scores_table import ScoresTable
from pipelines.tracking.registry import load_registered_detector
from tests.integration.conftest import beaten_by_a_rival, register_scoring_model, run_command, running_mlflow_server


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


def _table(output) -> ScoresTable:
    return ScoresTable.at(str(output), "vae.scores")


def _rows(output, run_date: str, snapshot: int | None = None) -> pd.DataFrame:
    return _table(output).read(run_date, snapshot).to_pandas()


@pytest.mark.timeout(600)
def test_every_row_is_scored_or_quarantined_once_and_reruns_replace_the_run_date(
    local_ray, mlflow_server, scoring_model, scoring_input, tmp_path
):
    config = load_config(CONFIG_DIR / "score.yaml", _overrides(scoring_input, tmp_path, mlflow_server, scoring_model),
                         cls=ScoreJobConfig)  # fmt: skip
    summary = score.run(config)
    rows = _rows(tmp_path, "2026-11-24")
    scored, quarantined = rows[rows.status == "scored"], rows[rows.status == "quarantined"]
    source = pd.read_parquet(scoring_input)
    assert len(scored) + len(quarantined) == len(source) == summary.rows_read == len(rows)
    assert sorted(rows.row_id) == sorted(source.row_id)
    assert sorted(quarantined.row_id) == [900_002, 900_003]  # 900_001's missing TSH is left out of its score
    assert quarantined.set_index("row_id").quarantine_reason.to_dict() == {
        900_002: "T3 is not finite", 900_003: "no feature has a value"}  # fmt: skip
    bad_input = json.loads(quarantined.set_index("row_id").quarantined_input[900_002])
    assert bad_input["T3"] == "inf" and bad_input["TSH"] == source.set_index("row_id").TSH[900_002]
    assert set(json.loads(quarantined.set_index("row_id").quarantined_input[900_003]).values()) == {None}
    assert quarantined.anomaly_score.isna().all() and scored.quarantine_reason.isna().all()
    assert set(rows.columns) >= {"row_id", "anomaly_score", "is_anomaly", "top_feature_1", "top_feature_1_share",
                                 "status", "model_name", "model_version", "run_date", "scored_at"}  # fmt: skip
    assert (rows.model_name == "thyroid-scorer").all() and (rows.run_date == "2026-11-24").all()
    shares = scored[[f"top_feature_{i}_share" for i in (1, 2, 3)]].to_numpy()
    assert (shares >= 0).all() and (shares.sum(1) <= 1 + 1e-6).all()

    detector = load_registered_detector("models:/thyroid-scorer@champion", mlflow_server)
    expected, _ = detector.score(source.set_index("row_id").loc[scored.row_id].reset_index())
    np.testing.assert_allclose(scored.anomaly_score.to_numpy(), expected, rtol=1e-4, atol=1e-4)
    assert (scored.is_anomaly == (scored.anomaly_score > detector.threshold)).all()
    assert summary.anomalies == int(scored.is_anomaly.sum())

    table = _table(tmp_path).load()
    committed = table.snapshot_by_id(summary.snapshot).summary.additional_properties
    assert committed["vae.run_date"] == "2026-11-24" and committed["vae.model"] == summary.model
    assert int(committed["vae.rows"]) == len(rows)
    assert [field.name for field in table.spec().fields] == ["run_date"]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("vae-anomaly-scoring").experiment_id
    (run,) = client.search_runs([experiment], f"tags.`vae.snapshot` = '{summary.snapshot}'")  # this job's run only
    assert committed["vae.job"] == run.info.run_id
    assert run.data.metrics["rows_quarantined"] == 2 and run.data.metrics["rows_scored"] == len(scored)
    assert run.data.metrics["psi"] == pytest.approx(summary.psi) and "score_p99" in run.data.metrics
    assert summary.psi < 0.1, "held-out rows of the training distribution must not look like drift"

    day = tmp_path / "export-2026-11-23"  # an empty first file: null-typed columns, the key too
    day.mkdir()
    pd.DataFrame(columns=source.columns).to_parquet(day / "part-0.parquet", index=False)
    source.to_parquet(day / "part-1.parquet", index=False)
    other_day = score.run(load_config(CONFIG_DIR / "score.yaml", _overrides(
        day, tmp_path, mlflow_server, scoring_model, run_date="2026-11-23"), cls=ScoreJobConfig))  # fmt: skip
    assert other_day.rows_read == len(source)  # was: refused as all-null, or a cast to null failing in the actors
    again = score.run(config)
    rescored = _rows(tmp_path, "2026-11-24")
    assert again.rows_scored == summary.rows_scored and len(rescored) == len(rows)
    pd.testing.assert_frame_equal(
        rescored.drop(columns="scored_at").sort_values("row_id").reset_index(drop=True),
        rows.drop(columns="scored_at").sort_values("row_id").reset_index(drop=True),
    )
    assert rescored.scored_at.nunique() == 1 and rescored.scored_at.iloc[0] > rows.scored_at.iloc[0]  # replaced
    assert len(_rows(tmp_path, "2026-11-23")) == other_day.rows_read  # the other date untouched
    old = _rows(tmp_path, "2026-11-24", summary.snapshot)  # time travel: the first run's rows
    assert len(old) == len(rows) and (old.scored_at == rows.scored_at.iloc[0]).all()


def _killed_job(point: str, arguments: list[str], ray_address: str) -> subprocess.CompletedProcess:
    """The score job as its own process on the session's Ray, killed by the fault hook at `point`."""
    env = {**os.environ, FAULT_ENV: point}
    return subprocess.run([sys.executable, "-m", "pipelines", *arguments, f"ray_address={ray_address}"], env=env,
                          capture_output=True, text=True, timeout=400, start_new_session=True)  # fmt: skip


@pytest.mark.timeout(900)
@pytest.mark.parametrize("point", ["write", "commit", "committed"])
def test_a_job_killed_at_any_step_leaves_readers_the_old_or_the_new_rows_and_a_rerun_completes(
    local_ray, capsys, mlflow_server, scoring_model, scoring_input, thyroid_dir, tmp_path, point
):
    import ray

    output, date = tmp_path / "out", "2026-11-25"
    old = score.run(load_config(CONFIG_DIR / "score.yaml", _overrides(scoring_input, output, mlflow_server,
                                                                     scoring_model, run_date=date),
                                cls=ScoreJobConfig))  # fmt: skip
    big = _big_input(pd.read_parquet(thyroid_dir / "test.parquet"), tmp_path / "big")
    arguments = ["score", "--config", str(CONFIG_DIR / "score.yaml"),
                 *_overrides(big, output, mlflow_server, scoring_model, run_date=date), "batch_size=2048",
                 "rows_per_file=8192"]  # fmt: skip
    killed = _killed_job(f"{point}:2" if point == "write" else point, arguments, ray.get_runtime_context().gcs_address)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    seen = _rows(output, date)
    assert seen.scored_at.nunique() == 1, "readers see a mix of two runs"
    new_rows = sum(len(pd.read_parquet(f)) for f in big.iterdir())
    assert len(seen) == (new_rows if point == "committed" else old.rows_read)
    assert sorted(seen.row_id) == sorted(pd.read_parquet(big if point == "committed" else scoring_input).row_id)

    done = run_command(capsys, *arguments)  # the re-run, in this process on the shared Ray
    assert done.returncode == 0, done.stderr[-2000:]
    rerun = _rows(output, date)
    assert sorted(rerun.row_id) == sorted(pd.read_parquet(big).row_id) and rerun.scored_at.nunique() == 1
    referenced = {task.file.file_path for task in _table(output).load().scan().plan_files()}
    assert all(path.startswith("file://") and os.path.exists(path.removeprefix("file://")) for path in referenced)


@pytest.mark.parametrize("ray_retries_the_lost_commit", [False, True], ids=["lost", "lost-and-retried-by-ray"])
def test_two_attempts_for_the_same_date_cannot_both_commit(
    local_ray, mlflow_server, scoring_model, scoring_input, tmp_path, monkeypatch, ray_retries_the_lost_commit
):
    """Attempt A writes its files; attempt B for the same date runs to the end meanwhile; A's commit then fails
    in one line naming the date, deletes its files, and the table holds B's rows once. The same when Ray's catalog
    retry takes A's lost commit for a transient error (its message holds snapshot ids, which can contain "500") and
    commits the failed transaction again."""
    if ray_retries_the_lost_commit:
        import ray.data

        iceberg = ray.data.DataContext.get_current().iceberg_config
        monkeypatch.setattr(iceberg, "catalog_retried_errors", [*iceberg.catalog_retried_errors, "Requirement failed"])
        monkeypatch.setattr(iceberg, "catalog_retry_max_backoff_s", 0)
    config = load_config(CONFIG_DIR / "score.yaml", _overrides(scoring_input, tmp_path, mlflow_server, scoring_model),
                         cls=ScoreJobConfig)  # fmt: skip
    rival = beaten_by_a_rival(config)
    rows = _rows(tmp_path, "2026-11-24")
    assert len(rows) == rival.rows_read and rows.row_id.is_unique
    table = _table(tmp_path).load()
    assert table.current_snapshot().snapshot_id == rival.snapshot  # B's commit is the last: nothing of A's
    referenced = {task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()}
    on_disk = {str(p) for p in tmp_path.rglob("data/run_date=*/*.parquet")}
    assert on_disk == referenced, "the losing attempt left data files behind"


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
            if list(output.rglob("data/run_date=2026-11-26/*.parquet")):
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
    assert _table(output).load() is None or _table(output).load().current_snapshot() is None  # nothing published
