"""The Kubernetes manifests and their schedules are well formed and consistent with the code they deploy (the
commands they run: test_infra_commands.py; the image and the Ray cluster launcher configs:
test_infra_image_and_launcher.py).

- Manifests pass the schema of their kind: the CRDs of KubeRay v1.7.0 and Kubernetes v1.34 schemas, kept in
  tests/schemas/ (see its README: source, version, how to refresh); nothing is downloaded.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from pipelines.settings.yaml_configs import PROJECT_DIR
from tests.unit.infra_documents import (
    INFRA,
    MANIFEST_FILES,
    MANIFESTS,
    PIPELINE_COMMANDS,
    containers,
    ray_version,
    walk,
)

SCHEMAS = PROJECT_DIR / "tests" / "schemas"
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


def _mlflow_pod() -> dict:
    """The pod spec of the MLflow Deployment (the only Deployment)."""
    (deployment,) = [doc for _, doc in MANIFESTS if doc["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def _mlflow_server(pod: dict) -> dict:
    """The container of `pod` that runs `mlflow server`."""
    (server,) = [c for c in pod["containers"] if c["command"][:2] == ["mlflow", "server"]]
    return server


def test_mlflow_asks_for_a_login_and_the_ray_pods_have_one():
    server = _mlflow_server(_mlflow_pod())
    assert "--app-name=basic-auth" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-auth"
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(server["volumeMounts"][0]["mountPath"])
    ray_containers = [c for _, doc in MANIFESTS if doc["kind"] in ("RayCluster", "RayService") for c in containers(doc)]
    assert len(ray_containers) == 4 and all({"name": "mlflow-client"} in [r["secretRef"] for r in c["envFrom"]]
                                  for c in ray_containers)  # fmt: skip


def test_the_mlflow_server_starts_without_mlflows_job_runner():
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    server = _mlflow_server(_mlflow_pod())
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env[MLFLOW_SERVER_ENABLE_JOB_EXECUTION.name] == "false"


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
    pod = _mlflow_pod()
    server = _mlflow_server(pod)
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
