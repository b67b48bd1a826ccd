"""Bad input to `vae-anomaly score`: one line naming the problem, a non-zero exit, no partition written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.settings.yaml_configs import CONFIG_DIR
from tests.integration.conftest import CommandResult, free_port, run_command


def _score(capsys, tmp_path, tracking_uri, input_path, model, *more: str) -> CommandResult:
    args = [f"input={input_path}", f"output={tmp_path / 'out'}", f"model={model}", "run_date=2026-11-24",
            f"tracking.tracking_uri={tracking_uri}", *more]  # fmt: skip
    return run_command(capsys, "score", "--config", str(CONFIG_DIR / "score.yaml"), *args)


def _write(tmp_path, name, frame) -> str:
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return str(path)


@pytest.mark.timeout(600)
def test_each_bad_input_exits_non_zero_with_one_line_and_writes_nothing(
    mlflow_server, scoring_model, thyroid_dir, tmp_path, capsys, monkeypatch
):
    rows = pd.read_parquet(thyroid_dir / "test.parquet")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really parquet")
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "uneven").mkdir()
    _write(tmp_path, "uneven/part-0.parquet", rows)
    _write(tmp_path, "uneven/part-1.parquet", rows.drop(columns=["TSH"]))  # a day's file lacking a column
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the unreachable server: fail fast
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    cases = [
        ("schema mismatch", mlflow_server, _write(tmp_path, "a.parquet", rows.drop(columns=["T3"])), scoring_model,
         "missing column(s) ['T3']"),
        ("mistyped column", mlflow_server, _write(tmp_path, "b.parquet", rows.assign(T3=rows.T3.astype(str))),
         scoring_model, "non-numeric values: {'T3'"),
        ("all-null column", mlflow_server, _write(tmp_path, "c.parquet", rows.assign(FTI=np.nan)), scoring_model,
         "column(s) ['FTI'] hold only nulls"),  # pandas writes NaN as Parquet nulls
        ("corrupt file", mlflow_server, str(corrupt), scoring_model, "cannot read Parquet at"),
        ("empty input", mlflow_server, _write(tmp_path, "d.parquet", rows.iloc[:0]), scoring_model, ": no rows"),
        ("empty directory", mlflow_server, str(tmp_path / "empty-dir"), scoring_model,
         f"{tmp_path / 'empty-dir'} holds no Parquet files"),
        ("a file Ray Data skips", mlflow_server, _write(tmp_path, "e.pq", rows), scoring_model,
         "e.pq: Ray Data reads only files named *.parquet; rename the file"),
        ("a file lacking a column", mlflow_server, str(tmp_path / "uneven"), scoring_model,
         f"{tmp_path / 'uneven' / 'part-1.parquet'}: missing column(s) ['TSH'], which other files of"),
        ("unknown alias", mlflow_server, str(thyroid_dir / "test.parquet"), "thyroid-scorer@nightly",
         "model thyroid-scorer@nightly not found"),
        ("unreachable tracking server", f"http://127.0.0.1:{free_port()}", str(thyroid_dir / "test.parquet"),
         scoring_model, "did not answer"),
    ]  # fmt: skip
    for case, tracking_uri, path, model, message in cases:
        done = _score(capsys, tmp_path, tracking_uri, path, model)
        last = done.last_error_line
        assert done.returncode != 0, case
        assert last.startswith("vae-anomaly score:") and message in last, (case, last)
        assert not (tmp_path / "out" / "run_date=2026-11-24").exists(), case
    # a key named like a column the scores table adds (was: a 139-line traceback from the scoring actors)
    done = _score(capsys, tmp_path, mlflow_server, thyroid_dir / "test.parquet", scoring_model, "key=[row_id,status]")
    assert done.returncode != 0 and "key column(s) ['status'] have the name of a column the scores table adds" in (
        done.last_error_line
    )
    # an output inside the input: the next night would read the scores table's files as input (found by a review)
    inside = tmp_path / "nightly"
    inside.mkdir()
    _write(tmp_path, "nightly/part-0.parquet", rows)
    done = run_command(capsys, "score", "--config", str(CONFIG_DIR / "score.yaml"), f"input={inside}",
                       f"output={inside / 'scores'}", f"model={scoring_model}", "run_date=2026-11-24",
                       f"tracking.tracking_uri={mlflow_server}")  # fmt: skip
    assert done.returncode == 2 and f"is inside the input {inside}" in done.last_error_line
    assert not (inside / "scores").exists()
    # a key the table cannot take is refused before anything is written (was: after the catalog database was made)
    stamped = _write(tmp_path, "stamped.parquet", rows.assign(event_ts=pd.Timestamp("2026-11-24 12:00:00.123456789")))
    done = run_command(capsys, "score", "--config", str(CONFIG_DIR / "score.yaml"), f"input={stamped}",
                       f"output={tmp_path / 'fresh'}", f"model={scoring_model}", "run_date=2026-11-24",
                       f"tracking.tracking_uri={mlflow_server}", "key=[row_id,event_ts]")  # fmt: skip
    assert done.returncode == 1 and "key column 'event_ts' holds nanosecond timestamps" in done.last_error_line
    assert not (tmp_path / "fresh").exists()
