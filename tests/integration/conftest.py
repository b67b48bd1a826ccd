"""Real services for integration tests: an `mlflow server` and Ray, on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from pipelines.runtime.cluster import end_processes
from pipelines.sample_data.datasets import THYROID_COLUMNS, load_thyroid, one_class_split

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


def stop_process_tree(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process, its descendants and the group it leads (it was started with start_new_session);
    SIGKILL whatever still runs after `grace` seconds. Waiting on every process, not only the leader, bounds the
    stop: `ray start --block` alone takes 30 s to shut its node down on SIGTERM."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        leader = psutil.Process(proc.pid)
        tree = [leader, *leader.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        end_processes(tree, grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# As `make mlflow-server` runs it: without MLflow's job runner, 8 processes that take ~30 CPU-s to start and ~1.4 GB
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real MLflow tracking server under `root` (SQLite backend, proxied artifacts) for one block; yields its
    http URI and its process (a test may kill it: the block stops whatever is left)."""
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root, env={**os.environ, **NO_JOB_RUNNER},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120, proc=proc)
        yield uri, proc
    finally:
        stop_process_tree(proc)
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The session's MLflow tracking server; yields its http URI."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as (uri, _):
        yield uri


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


@pytest.fixture
def local_ray():
    """The session's one local Ray (4 logical CPUs) for in-process pipeline runs, started on first use (never a
    stale cluster); a test that needs a cluster of its own calls `stop_local_ray` first, the next user starts it
    again, and `pytest_sessionfinish` stops it."""
    ensure_local_ray()
    yield


def ensure_local_ray() -> str:
    """Start the session's one local Ray (4 logical CPUs) unless this process is connected; its GCS address."""
    import ray

    from pipelines.runtime.cluster import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=4)
    return ray.get_runtime_context().gcs_address


def stop_local_ray() -> None:
    """Stop this process's Ray (the shared one), if any, so a test can start the cluster it has under test."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def pytest_sessionfinish(session, exitstatus):
    if "ray" in sys.modules:
        stop_local_ray()


@dataclass
class CommandResult:
    """What a `vae-anomaly` command run in-process returned and printed (as `subprocess.CompletedProcess`)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def last_error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def run_command(capsys, *argv: str) -> CommandResult:
    """`vae-anomaly *argv` through the CLI's own `main` in this process: its exit code and what it printed."""
    from pipelines.cli import main

    capsys.readouterr()  # drop what the test printed before
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return CommandResult(code, out, err)


def published_rows(output: Path | str, run_date: str) -> pd.DataFrame:
    """The rows a score job committed for `run_date` to the scores table in the warehouse `output`."""
    from pipelines.storage.scores_table import ScoresTable

    return ScoresTable.at(str(output), "vae.scores").read(run_date).to_pandas()


def beaten_by_a_rival(config) -> object:
    """Run the score job for `config` (attempt A) so that, once A has written its files and before it commits,
    attempt B of the same config runs to the end and commits first; checks that A then fails in one line naming
    the date, and returns B's summary."""
    from pipelines.commands import score
    from pipelines.runtime.scored_output import ScoresSink
    from pipelines.storage.scores_table import ConcurrentRunError

    commit, rival = ScoresSink.commit, []

    def commit_after_a_rival(sink, properties):
        if not rival:
            rival.append(None)
            rival[0] = score.run(config)  # B, started after A and committed first
        return commit(sink, properties)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ScoresSink, "commit", commit_after_a_rival)
        with pytest.raises(ConcurrentRunError, match=f"^run_date {config.date} was committed by another attempt"):
            score.run(config)
    return rival[0]


def train_overrides(data_dir: Path, tmp: Path, tracking_uri: str, name: str, epochs: int = 4) -> list[str]:
    """Small, fast settings for the thyroid config, isolated in tmp."""
    return [
        f"data.path={data_dir}", f"run.name={name}", f"run.storage_path={tmp / 'runs'}", f"train.epochs={epochs}",
        f"tracking.tracking_uri={tracking_uri}", f"tracking.model_name={name}", f"tracking.experiment={name}",
        "train.patience=null",
    ]  # fmt: skip


def epoch_steps(client, run_id: str, metric: str = "val_loss") -> list[int]:
    """The epochs at which `metric` was logged to the MLflow run, in order."""
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def train_killing_a_worker(run: Callable[[], object], tracking_uri: str, run_name: str) -> tuple[object, int]:
    """Run `run()` (a training run named `run_name`) in a thread; once three epochs are logged, SIGKILL one
    Ray Train worker process; returns the run's result and the killed worker's pid."""
    import ray
    from mlflow import MlflowClient
    from ray.util.state import list_actors

    gcs = ray.get_runtime_context().gcs_address  # explicit: never a stale cluster from another test
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run()), daemon=True)
    thread.start()
    client = MlflowClient(tracking_uri)
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`vae.run_name` = '{run_name}'")  # fmt: skip
        if runs and len(epoch_steps(client, runs[0].info.run_id)) >= 3:
            workers = list_actors(gcs, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            victim = workers[-1].pid
            os.kill(victim, signal.SIGKILL)  # a real worker process dies mid-training
        time.sleep(0.2)
    assert victim is not None, "training never reached epoch 3"
    thread.join(timeout=400)
    assert "result" in outcome, "training did not finish after the worker was killed"
    return outcome["result"], victim


def dead_train_workers() -> set[int]:
    """The pids of Ray Train worker processes that died in the current Ray cluster."""
    import ray
    from ray.util.state import list_actors

    gcs = ray.get_runtime_context().gcs_address
    return {a.pid for a in list_actors(gcs, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "DEAD")])}


def register_scoring_model(tracking_uri: str, thyroid_dir: Path, name: str = "thyroid-scorer", epochs: int = 30) -> str:
    """A real registered model, a new version of `name` that becomes `name@champion` on `tracking_uri` (trained
    in-process for `epochs` in seconds; the Ray Train path has its own tests), with the reference statistics and key
    columns the training pipeline stores."""
    from pipelines.settings.yaml_configs import TrackingSettings
    from pipelines.tracking.monitoring import reference_statistics
    from pipelines.tracking.runs import Tracker, input_signature, tracked_run
    from vae import VAE, DataLayout, Detector, ModelConfig, ObjectiveConfig, Preprocessor, TrainConfig, fit

    rows = pd.read_parquet(thyroid_dir / "train")
    pre = Preprocessor(numeric=THYROID_COLUMNS).fit(rows)
    model = VAE(ModelConfig(latent_dim=4), DataLayout(pre.layout_blocks()))
    x = pre.transform(rows)
    fit(model, x[100:], x[:100], ObjectiveConfig(), TrainConfig(epochs=epochs, batch_size=64, lr=5e-3), log=None)
    detector = Detector(model, pre, metadata={"key_columns": ["row_id"]})
    detector.calibrate(*detector.score(rows.iloc[:100]))
    detector.metadata["score_reference"] = reference_statistics(detector.score(rows)[0])
    settings = TrackingSettings(tracking_uri=tracking_uri, experiment="fixtures", model_name=name,
                                alias="champion")  # fmt: skip
    tracker = Tracker(settings)
    with tracked_run(tracker, "scoring-fixture", {}):
        tracker.log_and_register(detector, input_signature(THYROID_COLUMNS, ()), {"purpose": "scoring tests"},
                                 rows[list(THYROID_COLUMNS)].head(5))  # fmt: skip
    return f"{name}@champion"


@pytest.fixture(scope="session")
def scoring_model(mlflow_server, thyroid_dir) -> str:
    """`thyroid-scorer@champion` on the session's MLflow server."""
    return register_scoring_model(mlflow_server, thyroid_dir)


@pytest.fixture(scope="session")
def scoring_input(thyroid_dir, tmp_path_factory) -> Path:
    """The held-out thyroid rows as four Parquet files, plus a row with a missing value (NaN: scored without it)
    and rows that cannot be scored (900_002: an infinite value; 900_003: no feature value, all null)."""
    rows = pd.read_parquet(thyroid_dir / "test.parquet")
    bad = rows.iloc[:3].copy()
    bad["row_id"] = [900_001, 900_002, 900_003]
    bad.loc[bad.index[0], "TSH"] = np.nan
    bad.loc[bad.index[1], "T3"] = np.inf
    bad.loc[bad.index[2], THYROID_COLUMNS] = None
    directory = tmp_path_factory.mktemp("to-score")
    frame = pd.concat([rows, bad], ignore_index=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        frame.iloc[part].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory
