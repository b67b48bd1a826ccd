"""Every file in infra/ parses, and the commands it schedules exist. (Schema checks against the KubeRay and
Kubernetes schemas come with the infra issue.)"""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import COMMANDS
from pipelines.config import PROJECT_DIR, ScoreJobConfig, load_config

INFRA = PROJECT_DIR / "infra"
MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))
CLUSTER_CONFIGS = sorted((INFRA / "ray").glob("*.yaml"))


def _cron_fields(schedule: str) -> list[str]:
    fields = schedule.split()
    assert len(fields) == 5, schedule
    return fields


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_manifests_parse_with_kind_and_a_schedule(path: Path):
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] and document["kind"] and document["metadata"]["name"]
    assert path.read_text().startswith("# kubectl apply -f " + str(path.relative_to(PROJECT_DIR)))
    if document["kind"] in ("RayCronJob", "CronJob"):
        _cron_fields(document["spec"]["schedule"])


def _scheduled_command(path: Path) -> list[str]:
    document = yaml.safe_load(path.read_text())
    if document["kind"] == "RayCronJob":
        return shlex.split(document["spec"]["jobTemplate"]["entrypoint"])
    container = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["ray", "job", "submit"]
    return container["args"]


@pytest.mark.parametrize("name", ["scoring-raycronjob.yaml", "scoring-cronjob.yaml"])
def test_scheduled_scoring_commands_are_valid_score_invocations(name):
    command = _scheduled_command(INFRA / "k8s" / name)
    assert command[:4] == ["python", "-m", "pipelines", "score"] and "score" in COMMANDS
    config_path, overrides = command[5], command[6:]
    config = load_config(PROJECT_DIR / config_path, overrides, cls=ScoreJobConfig)
    assert "{run_date}" in config.input and config.date in config.input_path


def test_crontab_line_is_a_valid_schedule_of_make_score_cluster():
    lines = [line for line in (INFRA / "cron" / "scoring.crontab").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    assert len(lines) == 1
    _cron_fields(" ".join(lines[0].split()[:5]))
    assert "make score-cluster" in lines[0]


def test_score_command_has_help():
    done = subprocess.run([sys.executable, "-m", "pipelines", "score", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "run_date" in done.stdout


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_ray_cluster_configs_pass_the_autoscaler_schema(path: Path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))  # what `ray up` / `ray submit` check: defaults filled, then the schema
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray_version()}-py311")
    head = config["available_node_types"][config["head_node_type"]]
    assert "GPU" not in head["resources"], "drivers run on a CPU head; GPUs are for the Train workers"
    assert any(t.get("resources", {}).get("GPU") for t in config["available_node_types"].values())


def ray_version() -> str:
    from importlib.metadata import version

    return version("ray")
