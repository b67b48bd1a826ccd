"""The infra/ files as the infra tests read them: their paths, the Kubernetes manifests parsed, and the image the
Makefile and the Dockerfile name."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import yaml

from pipelines.settings.yaml_configs import PROJECT_DIR

INFRA = PROJECT_DIR / "infra"
MANIFEST_FILES = sorted((INFRA / "k8s").glob("*.yaml"))
CLUSTER_CONFIGS = sorted((INFRA / "ray").glob("*.yaml"))


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = [(path, doc) for path in MANIFEST_FILES for doc in documents(path)]


def walk(node, key: str | None = None) -> Iterator[tuple[str | None, object]]:
    """Every (key, value) pair in a parsed YAML tree, depth first."""
    yield key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def containers(document: dict) -> list[dict]:
    return [c for key, value in walk(document) if key in ("containers", "initContainers") for c in value]


def ray_version() -> str:
    return version("ray")


def project_image() -> str:
    (line,) = [line for line in (PROJECT_DIR / "Makefile").read_text().splitlines() if line.startswith("IMAGE ?=")]
    return line.split("?=")[1].strip().replace("$(RAY_VERSION)", ray_version())


def dockerfile_base() -> str:
    (line,) = [line for line in (INFRA / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("FROM")]
    return line.split()[1]
