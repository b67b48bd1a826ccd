"""The infra/ files as the infra tests read them: their paths, the Kubernetes manifests parsed, the command lines
they run, and the image the Makefile and the Dockerfile name."""

from __future__ import annotations

import re
import shlex
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
