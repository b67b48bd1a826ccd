"""Refresh the schemas that tests/unit/test_infra_files.py checks infra/k8s/ against (a maintainer's script;
tests never download anything).

    python tests/schemas/vendor_schemas.py --kuberay-crds KUBERAY/ray-operator/config/crd/bases \
        --kubernetes-schemas KUBERNETES_VALIDATE/kubernetes-json-schema/v1.34.0-local-strict

KuberRay: the `openAPIV3Schema` of each CRD's served `v1` version. Kubernetes: the "local-strict" JSON schemas
(Kubernetes' OpenAPI as JSON Schema 2020-12, unknown fields rejected) with the definitions each kind needs
inlined, so one file per kind is self-contained. Descriptions are dropped (they are most of the bytes), and
CRD objects with declared properties get `additionalProperties: false`, which is what `kubectl apply`'s strict
field validation does with unknown fields.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KUBERAY_DIR = HERE / "kuberay"
KUBERNETES_DIR = HERE / "kubernetes"
CRDS = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_raycronjobs.yaml", "ray.io_rayservices.yaml")
KINDS = (
    "namespace-v1",
    "persistentvolumeclaim-v1",
    "service-v1",
    "deployment-apps-v1",
    "statefulset-apps-v1",
    "cronjob-batch-v1",
    "networkpolicy-networking-v1",
    "objectmeta-meta-v1",
)  # file stems in the kubernetes-json-schema directory
SHARED_DEFINITIONS = "/api/_definitions.json#/$defs/"  # how kind files point into _definitions.json


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def forbid_unknown_fields(node: Any) -> Any:
    """`additionalProperties: false` on every object schema that lists its properties and keeps no unknown ones."""
    if isinstance(node, list):
        return [forbid_unknown_fields(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: forbid_unknown_fields(v) for k, v in node.items()}
    keeps_unknown = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in node and not keeps_unknown:
        node["additionalProperties"] = False
    return node


def crd_schema(path: Path) -> tuple[str, dict]:
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = forbid_unknown_fields(strip_descriptions(version["schema"]["openAPIV3Schema"]))
    return crd["spec"]["names"]["kind"], schema


def referenced(node: Any, found: set[str]) -> None:
    """Add the definition names that `node` points to (`#/$defs/NAME`) to `found`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            found.add(ref.removeprefix("#/$defs/"))
        for value in node.values():
            referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            referenced(value, found)


def kind_schema(kind_file: Path, definitions: dict[str, Any]) -> dict:
    """The kind's schema with the definitions it reaches (transitively) inlined under `$defs`."""
    text = kind_file.read_text().replace(SHARED_DEFINITIONS, "#/$defs/")
    schema = {k: v for k, v in json.loads(text).items() if k != "$id"}
    needed: set[str] = set()
    todo = [schema]
    while todo:
        found: set[str] = set()
        referenced(todo.pop(), found)
        todo.extend(definitions[name] for name in found - needed)
        needed |= found
    schema["$defs"] = {name: definitions[name] for name in sorted(needed)}
    return strip_descriptions(schema)


def write(path: Path, schema: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{path.relative_to(HERE)}: {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kuberay-crds", type=Path, required=True)
    parser.add_argument("--kubernetes-schemas", type=Path, required=True)
    args = parser.parse_args()
    for crd in CRDS:
        kind, schema = crd_schema(args.kuberay_crds / crd)
        write(KUBERAY_DIR / f"{kind.lower()}-ray.io-v1.json", schema)
    definitions = json.loads((args.kubernetes_schemas / "_definitions.json").read_text())["$defs"]
    for stem in KINDS:
        write(KUBERNETES_DIR / f"{stem}.json", kind_schema(args.kubernetes_schemas / f"{stem}.json", definitions))


if __name__ == "__main__":
    main()
