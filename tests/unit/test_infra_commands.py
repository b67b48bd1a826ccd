"""The commands the Kubernetes manifests, the schedules and the docs run exist and load their configs: each
entrypoint runs with --help, each pipeline command's config arguments load, the CronJob's script names its job by
yesterday's UTC date, and the RayService deploys what `make serve` runs (the manifests themselves:
test_infra_files.py)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import COMMANDS
from pipelines.runtime.online_scoring import build_app
from pipelines.settings.model_jobs import ScoreJobConfig, ServeConfig
from pipelines.settings.yaml_configs import PROJECT_DIR, TrainPipelineConfig, TunePipelineConfig, load_config
from tests.unit.infra_documents import (
    CLUSTER_CONFIGS,
    ENTRYPOINTS,
    INFRA,
    MANIFESTS,
    PIPELINE_COMMANDS,
    containers,
)
from vae import from_dict

VENV_BIN = Path(sys.executable).parent
CONFIG_CLASS = {"train": TrainPipelineConfig, "tune": TunePipelineConfig, "score": ScoreJobConfig}


@pytest.mark.parametrize("words", ENTRYPOINTS, ids=" ".join)
def test_entrypoints_named_in_the_manifests_exist(words: tuple[str, ...]):
    program = sys.executable if words[0] == "python" else str(VENV_BIN / words[0])
    done = subprocess.run([program, *words[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def test_the_entrypoints_cover_every_kind_of_command():
    assert {("python", "-m", "pipelines", c) for c in ("train", "tune", "score")} <= set(ENTRYPOINTS)
    assert {("ray", "job", "submit"), ("mlflow", "server"), ("mlflow", "db", "upgrade")} <= set(ENTRYPOINTS)


@pytest.mark.parametrize(("path", "argv"), PIPELINE_COMMANDS, ids=lambda v: v.name if isinstance(v, Path) else "")
def test_pipeline_commands_in_the_manifests_load_their_config(path: Path, argv: list[str]):
    command = argv[3]
    assert command in COMMANDS
    assert argv[4] == "--config"
    config = load_config(PROJECT_DIR / argv[5], argv[6:], cls=CONFIG_CLASS[command])
    if command == "score":
        assert "{run_date}" in config.input and config.date in config.input_path


def test_the_script_ray_submit_runs_is_there_and_runs_as_a_script(tmp_path):
    """`ray submit <cluster.yaml> pipelines/commands/tune.py -- ...` copies that one file to the head node and runs it
    from the home directory: every such line in the docs and configs names an existing file, which runs as a
    script from elsewhere (absolute imports of the installed package)."""
    documents = [*CLUSTER_CONFIGS, INFRA / "README.md", PROJECT_DIR / "README.md", *(PROJECT_DIR / "pipelines" /
                 "configs").glob("*.yaml")]  # fmt: skip
    scripts = {script for path in documents for script in re.findall(r"ray submit \S+ (\S+\.py)", path.read_text())}
    assert scripts == {"pipelines/commands/tune.py"}
    done = subprocess.run([sys.executable, str(PROJECT_DIR / scripts.pop()), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: vae-anomaly tune")


def _scheduled_script(tmp_path: Path, job_exists: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The CronJob's script run by `sh` with a stub `ray` on PATH that records its calls; `ray job status` finds
    the job when `job_exists`."""
    (cronjob,) = [doc for path, doc in MANIFESTS if path.name == "scoring-cronjob.yaml"]
    (container,) = containers(cronjob)
    calls = tmp_path / "calls"
    stub = tmp_path / "bin" / "ray"
    stub.parent.mkdir(exist_ok=True)
    status = """echo "Job '$3' succeeded" >&2""" if job_exists else "exit 1"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in "job status"*) {status};; esac\n')
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", container["args"][0]], env=env, capture_output=True, text=True, timeout=60)
    return done, calls.read_text().splitlines()


def test_the_scheduled_job_is_named_by_yesterdays_utc_date_and_a_retry_follows_it(tmp_path):
    yesterday = subprocess.run(["date", "-u", "-d", "yesterday", "+%F"], capture_output=True, text=True).stdout.strip()
    done, calls = _scheduled_script(tmp_path, job_exists=False)
    assert done.returncode == 0, done.stderr
    submit = [c for c in calls if c.startswith("job submit")]
    assert submit == [
        f"job submit --submission-id score-{yesterday} -- python -m pipelines score "
        f"--config pipelines/configs/score.yaml input=s3://anomaly-data/events/date={{run_date}}/ "
        f"output=/mnt/cluster_storage/scores model=vae-anomaly@champion run_date={yesterday}"
    ]
    (tmp_path / "retry").mkdir()
    retried, calls = _scheduled_script(tmp_path / "retry", job_exists=True)
    assert retried.returncode == 0, retried.stderr
    assert not [c for c in calls if c.startswith("job submit")]
    assert f"job logs --follow score-{yesterday}" in calls


def test_crontab_line_is_a_valid_schedule_of_make_score_cluster():
    lines = [line for line in (INFRA / "cron" / "scoring.crontab").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    assert len(lines) == 1
    assert len(lines[0].split()) > 5
    assert "make score-cluster" in lines[0]


# Where the online endpoint listens (it binds the address and reaches nothing there): its config's default, and the
# command that prints and documents it.
LISTENING = {
    ("pipelines/settings/model_jobs.py", '    host: Text = "127.0.0.1"  # 0.0.0.0 to listen on every interface')
}
LISTENING_FILES = {"pipelines/commands/serve.py"}


def test_pipelines_learn_addresses_only_from_the_environment():
    pattern = re.compile(r"https?://|localhost|127\.0\.0\.1|:8265|:5000|:6379")
    for package in ("vae", "pipelines"):
        for source in (PROJECT_DIR / package).rglob("*.py"):
            name = str(source.relative_to(PROJECT_DIR))
            hits = [line for line in source.read_text().splitlines() if pattern.search(line)
                    and (name, line) not in LISTENING and name not in LISTENING_FILES]  # fmt: skip
            assert not hits, f"{name}: {hits}"


def test_the_ray_service_deploys_the_endpoint_that_make_serve_runs():
    (service,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayService"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    module, name = application["import_path"].split(":")
    assert getattr(importlib.import_module(module), name) is build_app
    config = from_dict(ServeConfig, application["args"])  # raises ConfigError on a key or value the command refuses
    assert config.model == "vae-anomaly@champion"
    port = serve_config["http_options"]["port"]
    pods = containers(service)
    assert len(pods) == 2 and all(port in [p["containerPort"] for p in c["ports"]] for c in pods)
    assert service["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token", "secretName": "ray-auth-token"}
