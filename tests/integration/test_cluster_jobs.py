"""`make train-cluster`, `make score-cluster` and `make tune-cluster`: `ray job submit` against a Ray head this
module starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from ray.job_submission import JobSubmissionClient

from tests.integration.conftest import PROJECT, VENV_BIN, free_port, published_rows, stop_process_tree, wait_for_http

HEAD_STARTS = 3  # a head whose job agent never registers is started again on other ports, this many times in all


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head --block` on 127.0.0.1 in its own process group; yields (dashboard URL, env).

    Every port the head listens on is a free one: the session's in-process Ray may be running beside it, and two
    nodes on one machine both take the dashboard agent's default HTTP port (52365), where the second agent's
    server fails and every `ray job submit` is refused ("No available agent to submit job"). A port picked free can
    still be taken before the head binds it (another process's Ray workers draw from the same range; seen once: the
    agent's HTTP port): then no job agent ever registers, and the head is stopped and started on other ports."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    for start in range(1, HEAD_STARTS + 1):
        log_path = tmp_path_factory.mktemp("head") / "ray-head.log"
        head, address, log = _start_head(env, log_path)
        try:
            wait_for_http(f"{address}/api/version", timeout=180, proc=head)
            _wait_for_job_agent(address, log_path, timeout=180 if start == HEAD_STARTS else 90)
            break
        except TimeoutError:
            stop_process_tree(head, grace=5)
            log.close()
            if start == HEAD_STARTS:
                raise
    try:
        yield address, env
    finally:
        stop_process_tree(head, grace=5)
        log.close()


def _start_head(env: dict, log_path) -> tuple[subprocess.Popen, str, object]:
    """A `ray start --head --block` process on free ports, logging to `log_path`: (process, dashboard URL, log)."""
    dashboard = free_port()
    log = open(log_path, "w")  # noqa: SIM115 - open for the head's life
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
         f"--metrics-export-port={free_port()}", "--num-cpus=4", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    return head, f"http://127.0.0.1:{dashboard}", log


def _wait_for_job_agent(address: str, log_path, timeout: float = 180) -> None:
    """The dashboard answers before the node's job agent has registered ("No available agent to submit
    job"): submit a no-op job until one is accepted and succeeds; on time-out the error carries the head's log."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = JobSubmissionClient(address)
            job = client.submit_job(entrypoint="true")
            break
        except Exception as error:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no job agent on {address} after {timeout:.0f} s; the head's log ends:\n"
                    + log_path.read_text()[-3000:]
                ) from error
            time.sleep(2)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the no-op job on {address} did not finish")
        time.sleep(1)


def _make(target: str, address: str, env: dict, mlflow_server: str, overrides: list[str], *variables: str):
    return subprocess.run(
        ["make", "--no-print-directory", target, f"RAY_ADDRESS={address}", f"MLFLOW_TRACKING_URI={mlflow_server}",
         f"ARGS={' '.join(overrides)}", *variables],
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
    score_args = [
        f"input={thyroid_dir / 'test.parquet'}",
        f"output={output}",
        "model=cluster-job@challenger",
        "actors=1",
    ]
    scored = _make("score-cluster", address, env, mlflow_server, score_args, "RUN_DATE=2026-11-24")
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    rows = published_rows(output, "2026-11-24")
    assert len(rows) == len(pd.read_parquet(thyroid_dir / "test.parquet"))

    retried = _make("score-cluster", address, env, mlflow_server, score_args, "RUN_DATE=2026-11-24")
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    assert "score-2026-11-24 was already submitted: following it" in retried.stdout  # re-attached, no second job
    jobs = [j for j in JobSubmissionClient(address).list_jobs() if (j.submission_id or "").startswith("score-")]
    assert [j.submission_id for j in jobs] == ["score-2026-11-24"]
    assert set(published_rows(output, "2026-11-24").scored_at) == set(rows.scored_at)  # not scored again


EPOCHS = 6


@pytest.mark.timeout(900)
def test_make_tune_cluster_sweeps_and_registers_the_best_trial(ray_head, mlflow_server, thyroid_dir, tmp_path):
    """A 2 x 2 grid of beta x latent size, each trial a 2-worker Ray Train run, ASHA on the validation NLL; the
    registered model is the best of the trials that ran all epochs."""
    address, env = ray_head
    sweep = [
        f"data.path={thyroid_dir / 'train'}", f"run.storage_path={tmp_path / 'runs'}", "tune.name=sweep-job",
        f"train.epochs={EPOCHS}", "tune.asha.enabled=true", "tune.asha.grace_period=1",
        "tune.space.objective.beta.grid=[0.5,4]", "tune.space.model.latent_dim.grid=[2,4]",
        "tracking.experiment=sweep-job", "tracking.model_name=sweep-job",
    ]  # fmt: skip
    swept = _make("tune-cluster", address, env, mlflow_server, sweep, "TUNE_CLUSTER_CONFIG=pipelines/configs/tune.yaml")
    out = swept.stdout + swept.stderr
    assert swept.returncode == 0, out[-4000:]
    assert "succeeded" in out and "registered sweep-job version 1 with alias @challenger" in out

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("sweep-job").experiment_id
    parent = client.search_runs([experiment], "tags.`vae.run_name` = 'sweep-job'")[0]
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep/results.csv", str(tmp_path)))
    by_trial = dict(zip(table["trial"], table["epochs"], strict=True))  # epochs as Tune saw them
    ran = {c.info.run_id: by_trial[c.data.tags["vae.trial.id"]] for c in children}
    history = {c.info.run_id: client.get_metric_history(c.info.run_id, "val_nll") for c in children}
    # a trial's run holds every epoch Tune saw; a stopped one's may hold an epoch or two more, which its Train
    # controller logged before the stop reached it (a race on a loaded machine): compare the epochs Tune saw
    seen = {run_id: sorted(h, key=lambda m: m.step)[: ran[run_id]] for run_id, h in history.items()}
    assert all(1 <= len(seen[run_id]) == ran[run_id] <= EPOCHS for run_id in history)
    stopped = [c for c in children if c.data.tags["vae.trial.outcome"] == "stopped by ASHA"]
    assert len(stopped) >= 2 and all(ran[c.info.run_id] < EPOCHS for c in stopped)
    assert {(c.data.params["objective.beta"], c.data.params["model.latent_dim"]) for c in children} == {
        (b, z) for b in ("0.5", "4.0") for z in ("2", "4")
    }

    best_nll = {run_id: min(m.value for m in h) for run_id, h in seen.items()}
    stopped_ids = {c.info.run_id for c in stopped}
    # a stopped trial's NLL comes from fewer epochs: only the others compete
    finished = [c.info.run_id for c in children if c.info.run_id not in stopped_ids]
    best_run = min(finished, key=best_nll.get)
    assert len(table) == 4 and table["best val_nll"].min() == pytest.approx(min(best_nll.values()))
    version = client.get_model_version_by_alias("sweep-job", "challenger")
    assert version.run_id == best_run
    assert client.get_run(parent.info.run_id).data.tags["vae.registered_version"] == "sweep-job/1"

    scored = subprocess.run([sys.executable, "-c", f"""
import json, pandas as pd
from pipelines.tracking.registry import load_registered_detector
detector = load_registered_detector("models:/sweep-job@challenger", {mlflow_server!r})
scores, _ = detector.score(pd.read_parquet({str(thyroid_dir / 'test.parquet')!r}))
print(json.dumps({{"n": len(scores), "finite": bool((scores == scores).all()), "threshold": detector.threshold}}))
"""], capture_output=True, text=True, timeout=300, cwd=PROJECT)  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert result["n"] == len(pd.read_parquet(thyroid_dir / "test.parquet")) and result["finite"]
    assert result["threshold"] == pytest.approx(float(version.tags["threshold"]))

    again = _make("tune-cluster", address, env, mlflow_server, sweep, "TUNE_CLUSTER_CONFIG=pipelines/configs/tune.yaml")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert "sweep 'sweep-job' already ran and registered sweep-job/1 with this config: nothing to sweep" in out
    assert f"best trial {client.get_run(parent.info.run_id).data.tags['vae.best_trial']}:" in out  # the table again
    assert [v.version for v in client.search_model_versions("name = 'sweep-job'")] == ["1"]  # nothing registered


def test_cluster_targets_require_the_addresses():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    for target in ("train-cluster", "score-cluster", "tune-cluster"):
        done = subprocess.run(["make", "--no-print-directory", target], cwd=PROJECT, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode != 0 and f"{target}: set RAY_ADDRESS" in done.stderr
