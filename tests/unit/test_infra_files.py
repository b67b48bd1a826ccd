"""The Kubernetes manifests, the schedules and the commands they run are well formed and consistent with the code
they deploy (the image and the Ray cluster launcher configs: test_infra_image_and_launcher.py).

- Manifests pass the schema of their kind: the CRDs of KubeRay v1.7.0 and Kubernetes v1.34 schemas, kept in
  tests/schemas/ (see its README: source, version, how to refresh); nothing is downloaded.
- Every command the manifests run exists (each runs with --help) and its config arguments load.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from pipelines.cli import COMMANDS
from pipelines.runtime.online_scoring import build_app
from pipelines.settings.model_jobs import ScoreJobConfig, ServeConfig
from pipelines.settings.yaml_configs import PROJECT_DIR, TrainPipelineConfig, TunePipelineConfig, load_config
from tests.unit.infra_documents import (
    CLUSTER_CONFIGS,
    INFRA,
    MANIFEST_FILES,
    MANIFESTS,
    containers,
    project_image,
    ray_version,
    walk,
)
from vae import from_dict

SCHEMAS = PROJECT_DIR / "tests" / "schemas"
VENV_BIN = Path(sys.executable).parent
NAMESPACE = "vae-anomaly"
SCHEMA_OF_KIND = {
    ("ray.io/v1", "RayCluster"): "kuberay/raycluster-ray.io-v1.json",
    ("ray.io/v1", "RayJob"): "kuberay/rayjob-ray.io-v1.json",
    ("ray.io/v1", "RayCronJob"): "kuberay/raycronjob-ray.io-v1.json",
    ("ray.io/v1", "RayService"): "kuberay/rayservice-ray.io-v1.json",
    ("v1", "Namespace"): "kubernetes/namespace-v1.json",
    ("v1", "PersistentVolumeClaim"): "kubernetes/persistentvolumeclaim-v1.json",
    ("v1", "Service"): "kubernetes/service-v1.json",
    ("apps/v1", "Deployment"): "kubernetes/deployment-apps-v1.json",
    ("apps/v1", "StatefulSet"): "kubernetes/statefulset-apps-v1.json",
    ("batch/v1", "CronJob"): "kubernetes/cronjob-batch-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "kubernetes/networkpolicy-networking-v1.json",
}
CONFIG_CLASS = {"train": TrainPipelineConfig, "tune": TunePipelineConfig, "score": ScoreJobConfig}
SECRET_NAMED = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|BACKEND_STORE_URI")
USER_AND_PASSWORD_IN_URI = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


MANIFEST_IDS = [f"{path.name}:{doc['kind']}" for path, doc in MANIFESTS]


@functools.cache
def validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    return jsonschema.Draft202012Validator(schema)


def schema_errors(document: dict) -> list[str]:
    """Every way `document` breaks the schema of its kind (and its metadata the ObjectMeta schema), one per line."""
    schema_file = SCHEMA_OF_KIND.get((document.get("apiVersion"), document.get("kind")))
    if schema_file is None:
        return [f"no schema kept for {document.get('apiVersion')} {document.get('kind')}"]
    errors = list(validator(schema_file).iter_errors(document))
    errors += validator("kubernetes/objectmeta-meta-v1.json").iter_errors(document.get("metadata", {}))
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def commands(document: dict) -> list[list[str]]:
    """The command lines a manifest runs in the project image: Ray job entrypoints and container commands
    (`sh -c` scripts split into words; a `ray job submit ... --` line yields the submitted command too)."""
    found = [shlex.split(value) for key, value in walk(document) if key == "entrypoint"]
    found = [script_command(argv[2]) if argv[:2] == ["sh", "-c"] else argv for argv in found]
    for container in containers(document):
        if container["image"] != project_image() or "command" not in container:
            continue  # another program's image, or the image's own command (KubeRay starts Ray in its pods)
        argv = [*container.get("command", []), *container.get("args", [])]
        if argv[:2] == ["sh", "-c"]:
            argv = script_command(argv[2])
        if argv[:3] == ["ray", "job", "submit"]:
            found.append(argv[argv.index("--") + 1 :])
            argv = argv[: argv.index("--")]
        found.append(argv)
    return found


SCHEDULED_DATE = "2026-11-24"  # what `date -u -d yesterday +%F` gives a scheduled script, for loading its config


def script_command(script: str) -> list[str]:
    """The command of a `sh -c` script split into words: its `ray job submit` or `python -m pipelines` line when it
    has one (from that command on; the schedule's $RUN_DATE and $JOB filled in), else the whole script."""
    text = " ".join(script.split())  # a folded YAML block: one line
    commands = [line for line in re.split(r"&&|\n|;", script if "\n" in script.strip() else text)
                if re.search(r"\b(ray job submit|python -m pipelines)\b", line)]  # fmt: skip
    if not commands:
        return shlex.split(script)
    (line,) = commands
    line = line[re.search(r"\b(ray job submit|python -m pipelines)\b", line).start() :]
    return shlex.split(line.replace("$RUN_DATE", SCHEDULED_DATE).replace("$JOB", f"score-{SCHEDULED_DATE}"))


def command_words(argv: list[str]) -> tuple[str, ...]:
    """The program and subcommand words of a command line: everything before its first option or argument."""
    words = []
    for word in argv:
        if word != "-m" and (word.startswith(("-", "$", "{")) or "=" in word or "/" in word):
            break
        words.append(word)
    return tuple(words)


ENTRYPOINTS = sorted({command_words(argv) for _, doc in MANIFESTS for argv in commands(doc)})
PIPELINE_COMMANDS = [(path, argv) for path, doc in MANIFESTS for argv in commands(doc)
                     if argv[:3] == ["python", "-m", "pipelines"]]  # fmt: skip


# --- Kubernetes manifests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "document"), MANIFESTS, ids=MANIFEST_IDS)
def test_manifest_passes_the_schema_of_its_kind(path: Path, document: dict):
    assert schema_errors(document) == []
    if document["kind"] != "Namespace":
        assert document["metadata"]["namespace"] == NAMESPACE


def test_the_schema_check_rejects_what_the_api_server_would():
    by_kind = {doc["kind"]: doc for _, doc in MANIFESTS}
    typo = copy.deepcopy(by_kind["RayCluster"])
    typo["spec"]["workerGroupSpecs"][0]["maxReplica"] = typo["spec"]["workerGroupSpecs"][0].pop("maxReplicas")
    assert any("maxReplica" in e for e in schema_errors(typo))
    wrong_type = copy.deepcopy(by_kind["Deployment"])
    wrong_type["spec"]["replicas"] = "two"
    assert any(e.startswith("spec/replicas:") for e in schema_errors(wrong_type))
    unscheduled = copy.deepcopy(by_kind["CronJob"])
    del unscheduled["spec"]["schedule"]
    assert any("'schedule' is a required property" in e for e in schema_errors(unscheduled))
    bad_container = copy.deepcopy(by_kind["RayCronJob"])
    bad_container["spec"]["jobTemplate"]["entrypoint"] = ["python", "-m", "pipelines"]
    assert any("jobTemplate/entrypoint" in e for e in schema_errors(bad_container))


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_each_manifest_starts_with_the_command_that_applies_it(path: Path):
    assert path.read_text().startswith(f"# kubectl apply -f {path.relative_to(PROJECT_DIR)}\n")


def test_the_deployment_paths_are_all_there():
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"RayCluster", "RayJob", "RayCronJob", "CronJob", "Deployment", "Service", "RayService"} <= kinds
    job_commands = {argv[3] for path, argv in PIPELINE_COMMANDS if path.name.startswith("rayjob")}
    assert job_commands == {"train", "tune"}
    scheduled = {path.name for path, argv in PIPELINE_COMMANDS if argv[3] == "score"}
    assert scheduled == {"scoring-raycronjob.yaml", "scoring-cronjob.yaml"}


def test_gpu_workers_ask_for_gpus_and_the_head_for_none():
    (cluster,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayCluster"]
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in containers(head))
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    assert workers["minReplicas"] == 0 < workers["maxReplicas"]
    assert all(int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1 for c in containers(workers))
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["rayVersion"] == ray_version()


def test_scheduled_runs_use_the_same_schedule():
    schedules = {doc["spec"]["schedule"] for _, doc in MANIFESTS if doc["kind"] in ("RayCronJob", "CronJob")}
    assert len(schedules) == 1
    assert len(schedules.pop().split()) == 5


def test_no_credentials_are_written_in_the_manifests():
    for path, document in MANIFESTS:
        assert document["kind"] != "Secret", f"{path.name}: Secrets are created by hand (infra/README.md)"
        for key, value in walk(document):
            if key == "env":
                for variable in value:
                    if SECRET_NAMED.search(variable["name"]):
                        assert "secretKeyRef" in variable.get("valueFrom", {}), f"{path.name}: {variable['name']}"
            if isinstance(value, str):
                assert not USER_AND_PASSWORD_IN_URI.search(value), f"{path.name}: a password in {value!r}"


def test_every_secret_claim_and_service_the_manifests_use_is_explained_or_defined():
    readme = (INFRA / "README.md").read_text()
    secrets = {v["name"] for _, doc in MANIFESTS for k, v in walk(doc) if k in ("secretRef", "secretKeyRef")}
    secrets |= {v["secretName"] for _, doc in MANIFESTS for k, v in walk(doc) if k == "authOptions"}
    assert secrets == {"mlflow-db", "object-store", "ray-auth-token", "mlflow-auth", "mlflow-client"}
    for name in secrets:
        assert f"kubectl -n {NAMESPACE} create secret generic {name}" in readme, name
    claims = {v["claimName"] for _, doc in MANIFESTS for k, v in walk(doc) if k == "persistentVolumeClaim"}
    defined = {doc["metadata"]["name"] for _, doc in MANIFESTS if doc["kind"] == "PersistentVolumeClaim"}
    assert claims and claims <= defined


def test_addresses_in_the_manifests_point_at_what_they_define():
    services = {doc["metadata"]["name"]: doc for _, doc in MANIFESTS if doc["kind"] == "Service"}
    tracking = {v["value"] for _, doc in MANIFESTS for k, v in walk(doc) if k == "env"
                for v in v if v["name"] == "MLFLOW_TRACKING_URI"}  # fmt: skip
    assert len(tracking) == 1
    url = urlparse(tracking.pop())
    service, namespace = url.hostname.split(".")[:2]
    assert namespace == NAMESPACE and url.port in [p["port"] for p in services[service]["spec"]["ports"]]
    (cluster,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayCluster"]
    for path, document in MANIFESTS:
        for key, value in walk(document):
            if key == "clusterSelector":
                assert value == {"ray.io/cluster": cluster["metadata"]["name"]}, path.name
            if isinstance(value, list) and value[:3] == ["ray", "job", "submit"]:
                address = urlparse(value[value.index("--address") + 1])
                assert (address.hostname, address.port) == (f"{cluster['metadata']['name']}-head-svc", 8265)
            if key == "env":
                for address in [urlparse(v["value"]) for v in value if v["name"] == "RAY_ADDRESS"]:
                    assert (address.hostname, address.port) == (f"{cluster['metadata']['name']}-head-svc", 8265)


def test_mlflow_asks_for_a_login_and_the_ray_pods_have_one():
    (deployment,) = [doc for _, doc in MANIFESTS if doc["kind"] == "Deployment"]
    (server,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["command"][:2] == ["mlflow", "server"]
    ]
    assert "--app-name=basic-auth" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(server["volumeMounts"][0]["mountPath"])
    ray_containers = [c for _, doc in MANIFESTS if doc["kind"] in ("RayCluster", "RayService") for c in containers(doc)]
    assert len(ray_containers) == 4 and all({"name": "mlflow-client"} in [r["secretRef"] for r in c["envFrom"]]
                                  for c in ray_containers)  # fmt: skip


def _pod_labels() -> dict[str, dict]:
    """The labels of the pods the network policies guard: MLflow, PostgreSQL, the Ray head (KubeRay adds its own)."""
    by_app = {doc["spec"]["template"]["metadata"]["labels"]["app"]: doc["spec"]["template"]["metadata"]["labels"]
              for _, doc in MANIFESTS if doc["kind"] in ("Deployment", "StatefulSet")}  # fmt: skip
    (cluster,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayCluster"]
    head = {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    (service,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayService"]
    serving = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    return {"mlflow": by_app["mlflow"], "postgres": by_app["mlflow-postgres"], "ray head": head, "serving": serving}


def test_network_policies_guard_mlflow_postgres_and_the_ray_head_from_outside_the_namespace():
    policies = [doc for _, doc in MANIFESTS if doc["kind"] == "NetworkPolicy"]
    for name, labels in _pod_labels().items():
        guarding = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert len(guarding) == 1 and guarding[0]["spec"]["policyTypes"] == ["Ingress"], name
        peers = [peer for rule in guarding[0]["spec"]["ingress"] for peer in rule["from"]]
        assert peers, f"{name}: a policy without peers admits no one"
        for peer in peers:  # pods of this namespace, or the KubeRay operator's namespace
            outside = peer.get("namespaceSelector")
            assert outside is None or outside == {"matchLabels": {"kubernetes.io/metadata.name": "kuberay"}}, name
    mlflow_policy = [p for p in policies if p["spec"]["podSelector"]["matchLabels"] == {"app": "mlflow"}][0]
    assert [peer["podSelector"]["matchLabels"] for peer in mlflow_policy["spec"]["ingress"][0]["from"]] == [
        {"ray.io/cluster": "vae-anomaly"},
        _pod_labels()["serving"],
    ]


def test_the_mlflow_server_keeps_runs_in_postgres_and_artifacts_in_s3():
    (deployment,) = [doc for _, doc in MANIFESTS if doc["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["command"][:2] == ["mlflow", "server"]]
    assert any(arg.startswith("--artifacts-destination=s3://") for arg in server["args"])
    assert not any(arg.startswith("--backend-store-uri") for arg in server["args"]), "the URI holds a password"
    assert {"secretRef": {"name": "mlflow-db"}} in server["envFrom"]
    (upgrade,) = pod["initContainers"]
    assert shlex.split(upgrade["command"][2]) == ["mlflow", "db", "upgrade", "$MLFLOW_BACKEND_STORE_URI"]
    (postgres,) = [doc for _, doc in MANIFESTS if doc["kind"] == "StatefulSet"]
    assert postgres["spec"]["template"]["spec"]["containers"][0]["image"] == "postgres:15"


def test_the_raycronjob_feature_gate_values_switch_it_on():
    values = yaml.safe_load((INFRA / "k8s" / "helm" / "kuberay-operator-values.yaml").read_text())
    gates = {gate["name"]: gate["enabled"] for gate in values["featureGates"]}
    assert gates["RayCronJob"] is True
    assert "helm/kuberay-operator-values.yaml" in (INFRA / "k8s" / "scoring-raycronjob.yaml").read_text()


# --- commands the manifests run ---------------------------------------------------------------------------------


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
