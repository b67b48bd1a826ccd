"""The registered model served online answers with the scores the batch job published for the same rows: through
`mlflow models serve` (a real server on 127.0.0.1, the local environment) and through the Ray Serve endpoint of
`python -m pipelines serve`, which also follows its alias while requests are in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
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
from pipelines.tracking.registry import load_registered_detector
from pipelines.tracking.scoped_env import scoped_tracking_uri
from tests.integration.conftest import (
    VENV_BIN,
    ensure_local_ray,
    free_port,
    published_rows,
    register_scoring_model,
    run_command,
    stop_process_tree,
    wait_for_http,
)

MODEL = "served-scorer"


@pytest.fixture(scope="module")
def served_model(mlflow_server, thyroid_dir) -> str:
    """Version 1 of `served-scorer`, its own model as the Serve test moves the alias: `served-scorer@champion`."""
    return register_scoring_model(mlflow_server, thyroid_dir, name=MODEL)


@pytest.fixture(scope="module")
def batch_scores(mlflow_server, served_model, scoring_input, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the batch job published for `served_model` (scored rows by row_id), and the input rows by row_id."""
    ensure_local_ray()
    output = tmp_path_factory.mktemp("served-scores")
    summary = score.run(load_config(CONFIG_DIR / "score.yaml", [
        f"input={scoring_input}", f"output={output}", f"model={served_model}", "run_date=2026-11-24",
        f"tracking.tracking_uri={mlflow_server}", "actors=1"], cls=ScoreJobConfig))  # fmt: skip
    batch = published_rows(output, summary.run_date).query("status == 'scored'").set_index("row_id")
    return batch, pd.read_parquet(scoring_input).set_index("row_id")


@pytest.mark.timeout(600)
def test_mlflow_models_serve_returns_the_batch_jobs_scores(local_ray, mlflow_server, served_model, batch_scores,
                                                          tmp_path):  # fmt: skip
    with scoped_tracking_uri(mlflow_server):
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{served_model}", dst_path=str(tmp_path / "m")))
    assert (model_dir / "serving_input_example.json").is_file(), "no input example was logged"
    requirements = (model_dir / "requirements.txt").read_text()
    assert "+cpu" not in requirements and "vae-anomaly" not in requirements
    batch, inputs = batch_scores
    rows = inputs.loc[batch.index[:50]]

    port = free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - open for the server's life
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{served_model}", "--env-manager", "local",
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


def _json_rows(rows: pd.DataFrame) -> list[dict]:
    return json.loads(rows[list(THYROID_COLUMNS)].to_json(orient="records", double_precision=15))


class Clients:
    """Threads that POST the same rows to /score until stopped, recording each answer's status and model."""

    def __init__(self, url: str, rows: list[dict], threads: int = 2) -> None:
        self.url, self.rows = url, rows
        self.answers: list[tuple[int, str | None, int]] = []  # (status, model, results)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._post, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _post(self) -> None:
        while not self.stop.is_set():
            try:
                response = requests.post(self.url, json={"rows": self.rows}, timeout=60)
                body = response.json() if response.status_code == 200 else {}
                self.answers.append((response.status_code, body.get("model"), len(body.get("results", []))))
            except requests.RequestException as err:
                self.answers.append((0, repr(err), 0))

    def wait_for(self, model: str, consecutive: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = [answer[1] for answer in self.answers[-consecutive:]]
            if len(recent) == consecutive and set(recent) == {model}:
                break
            time.sleep(0.2)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.mark.timeout(600)
def test_ray_serve_endpoint_returns_the_batch_jobs_scores_and_follows_the_alias(
    local_ray, mlflow_server, thyroid_dir, served_model, batch_scores, tmp_path
):
    import ray

    batch, inputs = batch_scores
    sample = inputs.loc[batch.index[:40]]
    good = _json_rows(sample)
    bad = [{**good[0], "TSH": "high"}, {k: v for k, v in good[1].items() if k != "FTI"}, "not a row",
           {**good[2], "T3": 1e300}]  # fmt: skip

    port = free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - open for the server's life
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "--model", served_model, "--port", str(port),
         f"tracking.tracking_uri={mlflow_server}", "alias_poll_s=1", "replicas=2", "cpus_per_replica=0.5"],
        env={**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", timeout=240, proc=server)
        assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "model": f"{MODEL}/1"}

        response = requests.post(f"{url}/score", json={"rows": [*good, *bad]}, timeout=60)
        assert response.status_code == 200, response.text[:2000]
        answer = response.json()
        assert answer["model"] == f"{MODEL}/1" and len(answer["results"]) == len(good) + len(bad)
        served, refused = answer["results"][: len(good)], answer["results"][len(good) :]
        expected = batch.loc[sample.index]
        np.testing.assert_allclose([r["score"] for r in served], expected.anomaly_score, rtol=1e-5, atol=1e-5)
        assert [r["is_anomaly"] for r in served] == expected.is_anomaly.tolist()
        assert [r["top_features"][0][0] for r in served] == expected.top_feature_1.tolist()
        np.testing.assert_allclose([r["top_features"][0][1] for r in served], expected.top_feature_1_share, rtol=1e-5)
        assert [r["reason"] for r in refused] == [
            "TSH is not a number",
            "FTI is not in the row",
            "the row is not a JSON object",
            "T3 is out of the training range",
        ]
        assert all(r["score"] is None and r["is_anomaly"] is None for r in refused)

        clients = Clients(f"{url}/score", good[:10])
        time.sleep(2)  # requests in flight on version 1
        register_scoring_model(mlflow_server, thyroid_dir, name=MODEL, epochs=3)  # version 2 becomes @champion
        clients.wait_for(f"{MODEL}/2", consecutive=20, timeout=180)
        statuses = {status for status, _, _ in clients.answers}
        assert statuses == {200}, [answer for answer in clients.answers if answer[0] != 200][:3]
        assert all(results == 10 for _, _, results in clients.answers)
        models = [model for _, model, _ in clients.answers]
        assert models[0] == f"{MODEL}/1" and models[-1] == f"{MODEL}/2" and set(models) == {f"{MODEL}/1", f"{MODEL}/2"}

        moved = requests.post(f"{url}/score", json={"rows": good}, timeout=60).json()
        version_2 = load_registered_detector(f"models:/{MODEL}/2", mlflow_server)
        np.testing.assert_allclose([r["score"] for r in moved["results"]], version_2.score(sample)[0], rtol=1e-5)

        server.send_signal(subprocess.signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        stop_process_tree(server)
        log.close()
    output = log_path.read_text()
    assert output.splitlines()[0].startswith(f"serving {MODEL}/1 on {url}/score"), output[-3000:]
    assert output.splitlines()[-1] == "stopped", output[-3000:]


def test_serving_a_model_the_registry_lacks_fails_in_one_line_before_ray_starts(mlflow_server, served_model, capsys):
    import ray

    connected = ray.is_initialized()
    result = run_command(capsys, "serve", "--model", f"{MODEL}@nowhere", f"tracking.tracking_uri={mlflow_server}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.last_error_line.startswith(f"vae-anomaly serve: error: model {MODEL}@nowhere not found in")
    assert len(result.stderr.strip().splitlines()) == 1
    assert ray.is_initialized() == connected
