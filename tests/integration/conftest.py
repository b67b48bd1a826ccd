"""Real services for integration tests: an `mlflow server` and Ray, on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.datasets import load_thyroid, one_class_split

PROJECT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def stop_process_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the group the process leads (it was started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (SQLite backend, proxied artifacts); yields its http URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120, proc=proc)
        yield uri
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture(scope="session")
def thyroid_dir(tmp_path_factory) -> Path:
    """The thyroid training rows (normal only, protocol seed 0) as a directory of three Parquet files,
    plus `test.parquet` beside it with labels."""
    root = tmp_path_factory.mktemp("thyroid")
    table, labels = load_thyroid()
    frame = pd.DataFrame(table).assign(label=labels)
    frame.insert(0, "row_id", np.arange(len(frame)))
    split = one_class_split(labels, seed=0, validation_share=0.0)
    train_dir = root / "train"
    train_dir.mkdir()
    for i, part in enumerate(np.array_split(split.train, 3)):
        frame.iloc[part].to_parquet(train_dir / f"part-{i}.parquet", index=False)
    frame.iloc[np.sort(split.test)].to_parquet(root / "test.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray for in-process pipeline runs (never a stale cluster)."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=4, logging_level="WARNING", include_dashboard=True)
    yield
    ray.shutdown()


def train_overrides(data_dir: Path, tmp: Path, tracking_uri: str, name: str, epochs: int = 4) -> list[str]:
    """Small, fast settings for the thyroid config, isolated in tmp."""
    return [
        f"data.path={data_dir}", f"run.name={name}", f"run.storage_path={tmp / 'runs'}", f"train.epochs={epochs}",
        f"tracking.tracking_uri={tracking_uri}", f"tracking.model_name={name}", f"tracking.experiment={name}",
        "train.patience=null",
    ]  # fmt: skip
