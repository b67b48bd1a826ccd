"""The image and the Ray cluster launcher configs: built on the pinned Ray, copying what the ignore file lets
through, installing the pinned torch; the launcher configs pass Ray's own autoscaler schema (what `ray up`
checks) and start every node with token authentication."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.settings.yaml_configs import PROJECT_DIR
from tests.unit.infra_documents import (
    CLUSTER_CONFIGS,
    INFRA,
    MANIFESTS,
    containers,
    dockerfile_base,
    project_image,
    ray_version,
)

# --- the image ------------------------------------------------------------------------------------------------------


def test_the_image_is_built_on_the_pinned_ray():
    assert dockerfile_base() == f"rayproject/ray:{ray_version()}-py311-gpu"
    assert project_image() == f"vae-anomaly:ray{ray_version()}-py311-gpu"
    images = {c["image"] for _, doc in MANIFESTS for c in containers(doc)}
    assert images == {project_image(), "postgres:15"}
    done = subprocess.run(["make", "-n", "image"], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert f"docker build -f infra/docker/Dockerfile -t {project_image()} ." in done.stdout


def test_the_dockerfile_copies_what_its_ignore_file_lets_through():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in (INFRA / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}  # fmt: skip
    sources = [word for line in dockerfile if line.startswith("COPY") for word in line.split()[1:-1]
               if not word.startswith("--")]  # fmt: skip
    assert sources and set(sources) <= allowed
    assert all((PROJECT_DIR / source).exists() for source in sources)


def test_install_script_pins_the_torch_the_makefile_pins():
    script = INFRA / "docker" / "install.sh"
    pin = re.search(r"^TORCH_PIN := (\S+)$", (PROJECT_DIR / "Makefile").read_text(), re.M).group(1)
    assert f'"{pin}"' in script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: install.sh" in usage.stderr


# --- Ray cluster launcher configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_ray_cluster_configs_pass_the_autoscaler_schema(path: Path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))  # what `ray up` / `ray submit` check: defaults filled, then the schema
    assert config["docker"]["image"] == dockerfile_base()
    assert [c.split()[:2] for c in config["setup_commands"]] == [["bash", "~/vae-anomaly/infra/docker/install.sh"]] * 2
    assert config["file_mounts"] == {"~/vae-anomaly": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    if config["provider"]["type"] == "local":
        assert "--num-gpus=0" in " ".join(config["head_start_ray_commands"])
    else:
        head = config["available_node_types"][config["head_node_type"]]
        assert "GPU" not in head["resources"], "drivers run on a CPU head; GPUs are for the Train workers"
        assert any(t.get("resources", {}).get("GPU") for t in config["available_node_types"].values())


def test_the_autoscaler_schema_check_can_fail():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    config["available_node_types"]["ray.worker.gpu"]["max_worker"] = 8  # a typo
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_launcher_clusters_start_ray_with_token_auth(path: Path):
    config = yaml.safe_load(path.read_text())
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
