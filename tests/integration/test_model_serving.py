"""The registered model is portable: `mlflow models serve` (a real server on 127.0.0.1, the local environment)
answers with the scores the batch job published for the same rows."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from pipelines.commands import score
from pipelines.sample_data.datasets import THYROID_COLUMNS
from pipelines.settings.model_jobs import ScoreJobConfig
from pipelines.settings.yaml_configs import CONFIG_DIR, load_config
from pipelines.tracking.scoped_env import scoped_tracking_uri
from tests.integration.conftest import VENV_BIN, free_port, published_rows, stop_process_tree, wait_for_http


@pytest.mark.timeout(600)
def test_mlflow_models_serve_returns_the_batch_jobs_scores(local_ray, mlflow_server, scoring_model, scoring_input,
                                                          tmp_path):  # fmt: skip
    with scoped_tracking_uri(mlflow_server):
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{scoring_model}", dst_path=str(tmp_path / "m")))
    assert (model_dir / "serving_input_example.json").is_file(), "no input example was logged"
    requirements = (model_dir / "requirements.txt").read_text()
    assert "+cpu" not in requirements and "vae-anomaly" not in requirements

    summary = score.run(load_config(CONFIG_DIR / "score.yaml", [
        f"input={scoring_input}", f"output={tmp_path / 'scores'}", f"model={scoring_model}", "run_date=2026-11-24",
        f"tracking.tracking_uri={mlflow_server}", "actors=1"], cls=ScoreJobConfig))  # fmt: skip
    batch = published_rows(tmp_path / "scores", summary.run_date).query("status == 'scored'").set_index("row_id")
    rows = pd.read_parquet(scoring_input).set_index("row_id").loc[batch.index[:50]]

    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - open for the server's life
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{scoring_model}", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"},
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=240, proc=server)
        payload = {"dataframe_split": rows[list(THYROID_COLUMNS)].to_dict(orient="split", index=False)}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=payload, timeout=60)
        assert response.status_code == 200, response.text[:2000]
    finally:
        stop_process_tree(server)
        log.close()
    served = pd.DataFrame(response.json()["predictions"])
    np.testing.assert_allclose(served.anomaly_score, batch.anomaly_score.loc[rows.index], rtol=1e-5, atol=1e-5)
    assert served.is_anomaly.tolist() == batch.is_anomaly.loc[rows.index].tolist()
